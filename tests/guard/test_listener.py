"""fcgi-guard: the protocol and every policy on a fake supervisord (superlance
style), then end to end with real supervisord, reference workers and nginx.
Its pure decisions (guardrules.py) are tested in test_guardrules.py."""
import io
import os
import shutil
import socket
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import xmlrpc.client

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import BIN_DIR, PoolSpec
from test_rules import DUMP, FakeClock

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fault(code, text):
    return xmlrpc.client.Fault(code, text)


def proc(name, pid, worker_state='idle', duration=0.0, requests=0,
         state='RUNNING', method='GET', uri='/'):
    return {'name': name, 'pid': pid, 'state': state, 'worker_state': worker_state,
            'request_duration': int(duration * 1e6), 'requests': requests,
            'request_method': method, 'request_uri': uri}


def pool(name, *procs, queue=0, backlog=8, drops=0):
    return {'name': name, 'processes': list(procs), 'listen_queue': queue,
            'listen_queue_len': backlog, 'listen_drops': drops}


class DummyProcess:
    """A worker as supervisor holds it; ``on_term``: 'stop' (exits at once)
    or 'ignore' (stuck until KILL); ``dumps``: answers USR1 with DUMP."""

    def __init__(self, pid, on_term='stop', dumps=True, stderr=True):
        self.statename, self.pid = 'RUNNING', pid
        self.on_term, self.dumps = on_term, dumps
        self.log = 'fcgi-worker[%d]: serving\n' % pid
        self.stderr = stderr


class DummySupervisorNS:
    def __init__(self, rpc):
        self.rpc = rpc

    def _get(self, name):
        if name not in self.rpc.processes:
            raise fault(10, 'BAD_NAME: %s' % name)
        return self.rpc.processes[name]

    def getProcessInfo(self, name):
        p = self._get(name)
        logfile = '/logs/%s.log' % name
        return {'statename': p.statename, 'pid': p.pid,
                'stderr_logfile': logfile if p.stderr else '',
                'stdout_logfile': logfile}

    def stopProcess(self, name, wait):
        self.rpc.calls.append(('stopProcess', name, wait))
        p = self._get(name)
        if p.statename != 'RUNNING':
            raise fault(70, 'NOT_RUNNING: %s' % name)
        p.statename = 'STOPPED' if p.on_term == 'stop' else 'STOPPING'
        return True

    def startProcess(self, name, wait):
        self.rpc.calls.append(('startProcess', name, wait))
        p = self._get(name)
        p.statename, p.pid = 'STARTING', p.pid + 1000
        return True

    def signalProcess(self, name, sig):
        self.rpc.calls.append(('signalProcess', name, sig))
        p = self._get(name)
        if sig == 'KILL':
            p.statename = 'STOPPED'
        elif sig == 'USR1' and p.dumps:
            p.log += DUMP + 'fcgi-worker[%d]: next log line\n' % p.pid
        return True

    def tailProcessStderrLog(self, name, offset, length):
        assert self._get(name).stderr
        return ['', len(self._get(name).log), False]

    def readProcessStderrLog(self, name, offset, length):
        assert self._get(name).stderr
        return self._get(name).log[offset:offset + length]

    def tailProcessStdoutLog(self, name, offset, length):
        return ['', len(self._get(name).log), False]

    def readProcessStdoutLog(self, name, offset, length):
        return self._get(name).log[offset:offset + length]


class DummyFcgiNS:
    def __init__(self, rpc):
        self.rpc = rpc

    def getPoolStatus(self, name):
        if name not in self.rpc.pools:
            raise fault(10, 'BAD_NAME: %s' % name)
        return self.rpc.pools[name]

    def getAllPoolStatus(self):
        if self.rpc.down:
            raise ConnectionRefusedError(111, 'Connection refused')
        return [self.rpc.pools[n] for n in sorted(self.rpc.pools)]

    def recordSlowRequest(self, name):
        self.rpc.calls.append(('recordSlowRequest', name))
        return 1

    def recordTerminatedRequest(self, name):
        self.rpc.calls.append(('recordTerminatedRequest', name))
        return 1


class DummyRPC:
    def __init__(self, pools=(), processes=None):
        self.pools = {p['name']: p for p in pools}
        self.processes = processes or {}
        self.calls = []
        self.down = False
        self.closed = 0
        self.supervisor = DummySupervisorNS(self)
        self.fcgi = DummyFcgiNS(self)

    def __call__(self, attr):
        """ServerProxy's way to reach its transport: rpc('close')()."""
        assert attr == 'close'

        def close():
            self.closed += 1
        return close


def tick(serial=1):
    payload = 'when:%d' % (1700000000 + serial)
    return ('ver:3.0 server:supervisor serial:%d pool:guard poolserial:%d '
            'eventname:TICK_5 len:%d\n%s' % (serial, serial, len(payload), payload))


def state_event(state, group, name, **extra):
    fields = dict(processname=name, groupname=group, from_state='RUNNING', **extra)
    payload = ' '.join('%s:%s' % kv for kv in fields.items())
    return ({'eventname': 'PROCESS_STATE_' + state}, payload)


class FcgiGuardTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def _getTargetClass(self):
        from supervisor_fcgi_ext.guard.listener import FcgiGuard
        return FcgiGuard

    def _makeOne(self, rpc, *argv, stdin=''):
        from supervisor_fcgi_ext.guard.listener import parse_args
        self.clock = FakeClock()
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        return self._getTargetClass()(
            rpc, parse_args(list(argv)), io.StringIO(stdin), self.stdout,
            self.stderr, clock=self.clock, sleep=self.clock.sleep,
            now=lambda: 1700000000.0)

    def log_lines(self):
        return self.stderr.getvalue().splitlines()

    # -- the protocol ---------------------------------------------------------

    def test_run_answers_every_event_ok_then_returns_at_eof(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100))])
        ps_payload = state_event('RUNNING', 'app', 'app_00', pid=100)[1]
        events = (tick(1) + 'ver:3.0 eventname:PROCESS_STATE_RUNNING len:%d\n%s'
                  % (len(ps_payload), ps_payload) + tick(2))
        guard = self._makeOne(rpc, '--max-requests', '10', stdin=events)
        guard.run()
        self.assertEqual(self.stdout.getvalue(), 'READY\nRESULT 2\nOK' * 3 + 'READY\n')
        self.assertEqual(self.stderr.getvalue(), '')

    def test_run_answers_ok_when_supervisord_is_unreachable(self):
        rpc = DummyRPC()
        rpc.down = True
        guard = self._makeOne(rpc, '--max-requests', '10', stdin=tick(1) + tick(2))
        guard.run()
        self.assertEqual(self.stdout.getvalue(), 'READY\nRESULT 2\nOK' * 2 + 'READY\n')
        lines = self.log_lines()
        self.assertEqual(len(lines), 2)
        self.assertIn('TICK_5 failed: ConnectionRefusedError:', lines[0])
        self.assertEqual(rpc.closed, 2)      # each failure drops the connection

    def test_missing_fcgi_namespace_is_named(self):
        rpc = DummyRPC()

        def unknown():
            raise fault(1, 'UNKNOWN_METHOD')
        rpc.fcgi.getAllPoolStatus = unknown
        self._makeOne(rpc, '--max-requests', '10', stdin=tick()).run()
        self.assertIn('add [rpcinterface:fcgi]', self.stderr.getvalue())
        self.assertTrue(self.stdout.getvalue().endswith('OKREADY\n'))

    def test_unknown_pool_is_logged_once_until_it_appears(self):
        rpc = DummyRPC()
        guard = self._makeOne(rpc, '--pool', 'app', '--max-requests', '10')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        rpc.pools['app'] = pool('app', proc('app_00', 100))
        guard.handle_event({'eventname': 'TICK_5'}, '')
        lines = self.log_lines()
        self.assertEqual(len(lines), 2)
        self.assertIn('pool app: BAD_NAME: app', lines[0])
        self.assertIn('pool app: reachable again', lines[1])

    # -- --request-timeout ------------------------------------------------------

    def test_stuck_worker_is_stopped_killed_after_grace_and_started(self):
        rpc = DummyRPC(
            [pool('app', proc('app_00', 100, 'running', 31.0, 4, uri='/?sleep=60'),
                  proc('app_01', 101, 'running', 29.0),
                  proc('app_02', 102, 'idle', 100.0),      # the last one's duration
                  proc('app_03', 103, 'reading', 40.0))],  # a silent client
            {'app:app_00': DummyProcess(100, on_term='ignore')})
        guard = self._makeOne(rpc, '--request-timeout', '30', '--grace', '2')
        start = self.clock()
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(rpc.calls, [
            ('stopProcess', 'app:app_00', False),
            ('recordTerminatedRequest', 'app'),
            ('signalProcess', 'app:app_00', 'KILL'),
            ('startProcess', 'app:app_00', False)])
        self.assertGreaterEqual(self.clock() - start, 2.0)
        self.assertLess(self.clock() - start, 2.5)
        line = self.log_lines()[0]
        for word in ('pool app', 'app_00', 'pid 100', 'GET /?sleep=60', '31.0 s'):
            self.assertIn(word, line)
        rpc.processes['app:app_00'].statename = 'RUNNING'
        guard.handle_event(*state_event('RUNNING', 'app', 'app_00', pid=1100))
        self.assertIn('app:app_00 back: pid 1100 replaces 100', self.log_lines()[-1])
        self.assertEqual(guard.pending, {})

    def test_worker_that_stops_within_grace_is_not_killed(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100, 'running', 31.0))],
                       {'app:app_00': DummyProcess(100, on_term='stop')})
        guard = self._makeOne(rpc, '--request-timeout', '30')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertNotIn(('signalProcess', 'app:app_00', 'KILL'), rpc.calls)
        self.assertIn(('startProcess', 'app:app_00', False), rpc.calls)
        self.assertLess(self.clock.t - 1000.0, 0.1)

    def test_worker_gone_before_the_stop_is_not_counted(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100, 'running', 31.0))],
                       {'app:app_00': DummyProcess(100)})
        rpc.processes['app:app_00'].statename = 'EXITED'
        guard = self._makeOne(rpc, '--request-timeout', '30')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(rpc.calls, [('stopProcess', 'app:app_00', False)])
        self.assertIn('terminate app:app_00: NOT_RUNNING', self.log_lines()[-1])
        self.assertEqual(guard.pending, {})

    # -- --slowlog ----------------------------------------------------------------

    def slowlog_guard(self, *processes, extra=()):
        self.slowlog = os.path.join(self.tmp, 'slow.log')
        rpc = DummyRPC([pool('app', *processes)],
                       {'app:' + p['name']: DummyProcess(p['pid']) for p in processes})
        return rpc, self._makeOne(rpc, '--slowlog-timeout', '5', '--slowlog',
                                  self.slowlog, *extra)

    def read_slowlog(self):
        with open(self.slowlog) as f:
            return f.read()

    def test_slow_request_gets_one_entry_with_the_stack(self):
        rpc, guard = self.slowlog_guard(
            proc('app_00', 100, 'running', 6.0, 3, uri='/?sleep=60'),
            proc('app_01', 101, 'running', 4.0))
        guard.handle_event({'eventname': 'TICK_5'}, '')
        rpc.pools['app']['processes'][0]['request_duration'] = 11 * 10**6
        guard.handle_event({'eventname': 'TICK_5'}, '')     # same request
        text = self.read_slowlog()
        self.assertEqual(text.count('[pool app] pid 100 (app_00)'), 1)
        self.assertIn('request = GET /?sleep=60\nduration = 6.0 s\n', text)
        self.assertIn('line 103 in demo_app', text)
        self.assertNotIn('serving', text)
        self.assertNotIn('next log line', text)
        self.assertNotIn('pid 101', text)
        self.assertEqual(rpc.calls, [('recordSlowRequest', 'app'),
                                     ('signalProcess', 'app:app_00', 'USR1')])
        self.assertIn('slow request on app_00 pid 100: GET /?sleep=60 running 6.0 s',
                      self.stderr.getvalue())

    def test_next_slow_request_of_the_same_worker_gets_its_own_entry(self):
        rpc, guard = self.slowlog_guard(proc('app_00', 100, 'running', 6.0, 3))
        guard.handle_event({'eventname': 'TICK_5'}, '')
        rpc.pools['app']['processes'][0]['requests'] = 4
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(self.read_slowlog().count('pid 100'), 2)

    def test_worker_that_dumps_nothing_gets_an_entry_saying_so(self):
        rpc, guard = self.slowlog_guard(proc('app_00', 100, 'running', 6.0))
        rpc.processes['app:app_00'].dumps = False
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertIn('no stack: the worker wrote none within 1 s of SIGUSR1',
                      self.read_slowlog())
        self.assertLessEqual(self.clock.t - 1000.0, 1.0 + 0.06)

    def test_slowlog_signal_none_signals_nobody(self):
        rpc, guard = self.slowlog_guard(proc('app_00', 100, 'running', 6.0),
                                        extra=('--slowlog-signal', 'none'))
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(rpc.calls, [('recordSlowRequest', 'app')])
        self.assertIn('no stack: --slowlog-signal none', self.read_slowlog())

    def test_stack_is_read_from_stdout_log_when_stderr_is_redirected(self):
        rpc, guard = self.slowlog_guard(proc('app_00', 100, 'running', 6.0))
        rpc.processes['app:app_00'].stderr = False
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertIn('in demo_app', self.read_slowlog())

    def test_unwritable_slowlog_is_logged(self):
        rpc, guard = self.slowlog_guard(proc('app_00', 100, 'running', 6.0))
        guard.options.slowlog = os.path.join(self.tmp, 'no', 'such', 'dir')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertIn('cannot write slowlog', self.log_lines()[-1])

    # -- --max-requests -------------------------------------------------------------

    def test_recycles_one_worker_at_a_time_idle_first_then_the_next(self):
        procs = [proc('app_00', 100, 'running', 0.1, 12),
                 proc('app_01', 101, 'idle', 0.1, 15),
                 proc('app_02', 102, 'running', 0.1, 20)]
        rpc = DummyRPC([pool('app', *procs)],
                       {'app:' + p['name']: DummyProcess(p['pid'], on_term='ignore')
                        for p in procs})
        guard = self._makeOne(rpc, '--max-requests', '10')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        guard.handle_event({'eventname': 'TICK_5'}, '')     # still stopping
        self.assertEqual(rpc.calls, [('stopProcess', 'app:app_01', False)])
        rpc.processes['app:app_01'].statename = 'STOPPED'
        guard.handle_event(*state_event('STOPPED', 'app', 'app_01', pid=101))
        self.assertEqual(rpc.calls[-1], ('startProcess', 'app:app_01', False))
        rpc.processes['app:app_01'].statename = 'RUNNING'
        procs[1].update(pid=1101, requests=0)
        guard.handle_event(*state_event('RUNNING', 'app', 'app_01', pid=1101))
        self.assertEqual(rpc.calls[-1], ('stopProcess', 'app:app_02', False))
        self.assertIn('recycling app_02 pid 102 after 20 requests', self.log_lines()[-1])
        self.assertEqual(set(guard.pending), {'app:app_02'})

    def test_recycling_keeps_a_running_worker(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100, 'idle', 0, 50),
                             proc('app_01', 0, 'stopped', 0, 0, state='BACKOFF'))])
        guard = self._makeOne(rpc, '--max-requests', '10')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(rpc.calls, [])

    def test_worker_that_ends_after_its_restart_is_left_to_supervisor(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100, 'idle', 0, 50),
                             proc('app_01', 101))],
                       {'app:app_00': DummyProcess(100)})
        guard = self._makeOne(rpc, '--max-requests', '10')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(rpc.calls[-1], ('startProcess', 'app:app_00', False))
        rpc.processes['app:app_00'].statename = 'FATAL'
        guard.handle_event(*state_event('FATAL', 'app', 'app_00'))
        self.assertEqual(guard.pending, {})
        self.assertIn('app:app_00: not started again: FATAL', self.log_lines()[-1])

    # -- --queue-alarm ---------------------------------------------------------------

    def test_queue_flood_raises_one_alarm_and_runs_the_command(self):
        out = os.path.join(self.tmp, 'alarm.out')
        rpc = DummyRPC([pool('app', proc('app_00', 100), queue=7, backlog=8)])
        guard = self._makeOne(rpc, '--queue-alarm', '80', '--alarm-command',
                              'echo "$FCGI_GUARD_ALARM $FCGI_GUARD_POOL '
                              '$FCGI_GUARD_LISTEN_QUEUE" >> %s' % out)
        with open(os.path.join(self.tmp, 'stderr'), 'w+') as stderr:
            guard.stderr = stderr
            for _ in range(4):
                guard.handle_event({'eventname': 'TICK_5'}, '')
            rpc.pools['app']['listen_queue'] = 0
            for _ in range(2):
                guard.handle_event({'eventname': 'TICK_5'}, '')
            for command, _ in guard.commands:
                command.wait(5)
            stderr.seek(0)
            lines = stderr.read().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn('ALARM pool app: listen queue alarm: listen queue 7 of '
                      'backlog 8 (>= 80%)', lines[0])
        self.assertIn('pool app: listen queue back to normal (0 of 8)', lines[1])
        with open(out) as f:
            self.assertEqual(f.read(), 'queue app 7\n')

    def run_alarm_command(self, command, advance=0.0):
        """Log lines after one alarm running ``command`` and one more event."""
        guard = self._makeOne(DummyRPC(), '--queue-alarm', '80',
                              '--alarm-command', command)
        with open(os.path.join(self.tmp, 'stderr'), 'w+') as stderr:
            guard.stderr = stderr
            guard.alarm('queue', 'app', 'test')
            proc = guard.commands[0][0]
            if not advance:
                proc.wait(5)
            self.clock.t += advance
            guard.handle_event({'eventname': 'PROCESS_STATE_RUNNING'}, '')
            self.assertEqual(guard.commands, [])
            self.assertIsNotNone(proc.poll())
            stderr.seek(0)
            return stderr.read().splitlines()[1:]

    def test_failing_alarm_command_is_logged(self):
        self.assertIn('--alarm-command exited with status 3',
                      self.run_alarm_command('exit 3')[0])

    def test_alarm_command_is_killed_after_a_minute(self):
        lines = self.run_alarm_command('sleep 30', advance=61)
        self.assertEqual(len(lines), 1)
        self.assertIn('--alarm-command killed after 60 s', lines[0])

    # -- --crash-threshold -------------------------------------------------------------

    def test_crash_loop_raises_one_alarm_per_episode(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100)), pool('web')])
        guard = self._makeOne(rpc, '--crash-threshold', '3/60')
        exited = state_event('EXITED', 'app', 'app_00', expected=0, pid=100)
        guard.handle_event(*exited)
        guard.handle_event(*state_event('EXITED', 'app', 'app_00', expected=1))
        guard.handle_event(*state_event('EXITED', 'other', 'x', expected=0))
        guard.handle_event(*state_event('BACKOFF', 'web', 'web_00', tries=1))
        guard.handle_event(*state_event('BACKOFF', 'app', 'app_01', tries=1))
        self.assertEqual(self.log_lines(), [])
        guard.handle_event(*exited)
        guard.handle_event(*exited)
        lines = self.log_lines()
        self.assertEqual(len(lines), 1)
        self.assertIn('ALARM pool app: crash loop: 3 unexpected exits within 60 s, '
                      'last app_00 EXITED from RUNNING', lines[0])
        self.clock.t += 61
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertIn('pool app: crash rate back below 3 exits in 60 s',
                      self.log_lines()[-1])
        for _ in range(3):
            guard.handle_event(*exited)
        self.assertEqual(sum('ALARM' in line for line in self.log_lines()), 2)


class ParseArgsTests(unittest.TestCase):
    def parse(self, *argv):
        from supervisor_fcgi_ext.guard.listener import parse_args
        return parse_args(list(argv))

    def test_policies(self):
        args = self.parse('--pool', 'a', '--pool', 'b', '--crash-threshold', '5/60',
                          '--slowlog-timeout', '1.5', '--slowlog', '/x',
                          '--slowlog-signal', 'sigusr2')
        self.assertEqual(args.pools, ['a', 'b'])
        self.assertEqual(args.crash_threshold, (5, 60.0))
        self.assertEqual(args.slowlog_signal, 'USR2')
        self.assertEqual(args.grace, 2.0)

    def test_wrong_options_are_one_line_and_exit_2(self):
        from contextlib import redirect_stderr
        for argv in ([], ['--request-timeout', '0'], ['--queue-alarm', '101'],
                     ['--crash-threshold', '5'], ['--crash-threshold', '0/60'],
                     ['--max-requests', '0'], ['--slowlog-timeout', '5'],
                     ['--slowlog', '/x', '--max-requests', '1'],
                     ['--request-timeout', '5', '--grace', '11'],
                     ['--slowlog-signal', 'NOPE', '--max-requests', '1'],
                     ['--max-requests', '1', 'extra']):
            err = io.StringIO()
            with redirect_stderr(err), self.assertRaises(SystemExit) as cm:
                self.parse(*argv)
            self.assertEqual(cm.exception.code, 2, argv)
            self.assertEqual(len(err.getvalue().splitlines()), 1, argv)
            self.assertTrue(err.getvalue().startswith('fcgi-guard: error: '), argv)

    def test_credentials_from_options_override_the_environment(self):
        from supervisor_fcgi_ext.guard.listener import make_rpc
        env = {'SUPERVISOR_SERVER_URL': 'unix:///run/s.sock',
               'SUPERVISOR_USERNAME': 'env-user', 'SUPERVISOR_PASSWORD': 'env-pw'}
        transport = make_rpc(self.parse('--max-requests', '1', '--password', 'pw'),
                             env)('transport')
        self.assertEqual((transport.serverurl, transport.username, transport.password),
                         ('unix:///run/s.sock', 'env-user', 'pw'))

    def test_main_outside_supervisor_says_so(self):
        from contextlib import redirect_stderr
        from supervisor_fcgi_ext.guard.listener import main
        err = io.StringIO()
        env = os.environ.pop('SUPERVISOR_SERVER_URL', None)
        try:
            with redirect_stderr(err):
                self.assertEqual(main(['--max-requests', '5']), 2)
        finally:
            if env is not None:
                os.environ['SUPERVISOR_SERVER_URL'] = env
        self.assertIn('must be run as a supervisor event listener', err.getvalue())


# -- end to end: real supervisord, fcgi-worker, fcgi-guard ---------------------------

def guarded(supervisor_factory, tmp_path, pools, args, **kwargs):
    """A supervisord running ``fcgi-guard ARGS``; (Supervisor, guard log path)."""
    workdir = str(tmp_path / 'sup')
    log = os.path.join(workdir, 'guard.log')
    section = ('[eventlistener:guard]\ncommand = %s %s\nevents = TICK_5,PROCESS_STATE\n'
               'buffer_size = 50\nstderr_logfile = %s\nstdout_logfile = NONE\n'
               % (os.path.join(BIN_DIR, 'fcgi-guard'), args, log))
    sup = supervisor_factory(pools, workdir=workdir, extra_sections=section, **kwargs)
    return sup, log


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ''


def test_stuck_request_is_terminated_after_its_stack_is_slowlogged(
        supervisor_factory, tmp_path):
    slowlog = tmp_path / 'app.slow'
    sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=2)],
                       '--pool app --request-timeout 2 --grace 1 --slowlog-timeout 1 '
                       '--slowlog %s --crash-threshold 1/60' % slowlog)
    url = sup.pool('app').socket_url
    outcome = []

    def stuck():
        try:
            outcome.append(fcgi_request(url, uri='/?sleep=60', timeout=30).status)
        except Exception as exc:
            outcome.append(exc)
        outcome.append(time.monotonic())
    client = threading.Thread(target=stuck)
    start = time.monotonic()
    client.start()
    busy = sup.wait_for(lambda: [p for p in sup.rpc.fcgi.getPoolStatus('app')['processes']
                                 if p['worker_state'] == 'running'], 5, 'the request')[0]
    # timeout + one check interval + grace, plus supervisor's event latency
    client.join(2 + 5 + 1 + 3)
    assert not client.is_alive(), 'the stuck request still runs'
    sup.wait_for(lambda: sup.pids('app').get(busy['name'], busy['pid']) != busy['pid'],
                 5, 'the stuck worker to be replaced and RUNNING')
    print('stuck request cut after %.1f s, worker back after %.1f s'
          % (outcome[1] - start, time.monotonic() - start))
    assert isinstance(outcome[0], Exception)            # the connection was cut
    assert fcgi_request(url, timeout=5).status == 200   # the pool serves on
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['slow_requests'], status['terminated_requests']) == (1, 1)
    text = read(log)
    assert ('pool app: terminating %s pid %d: GET /?sleep=60 running'
            % (busy['name'], busy['pid'])) in text
    assert 'ALARM' not in text       # a worker the guard stopped is no crash
    entry = read(slowlog)
    assert '[pool app] pid %d (%s)\nrequest = GET /?sleep=60\n' % (
        busy['pid'], busy['name']) in entry
    assert 'in demo_app' in entry


def test_recycling_under_steady_load_fails_no_request(supervisor_factory, nginx_factory,
                                                      tmp_path):
    sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=3)],
                       '--pool app --max-requests 50')
    nginx = nginx_factory(sup.pool('app').socket_url)
    first = set(sup.pids('app').values())
    stop, counts, errors = threading.Event(), [0, 0], []

    def load():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(nginx.url + '/?sleep=0.01', timeout=10) as r:
                    r.read()
                counts[0] += 1
            except (OSError, urllib.error.HTTPError) as exc:
                counts[1] += 1
                errors.append(repr(exc))
    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    lowest = 3
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = set(sup.pids('app').values())
            lowest = min(lowest, len(pids))
            if not pids & first and read(log).count(' back: ') >= 3:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    recycled = read(log).count('recycling app_')
    print('recycled %d workers under %d requests, %d failed, at least %d RUNNING'
          % (recycled, counts[0], counts[1], lowest))
    assert not pids & first, 'not every worker was recycled within 30 s'
    assert counts[1] == 0, errors[:3]
    assert counts[0] > 300
    assert lowest >= 2                  # one at a time


def test_queue_flood_raises_exactly_one_alarm(supervisor_factory, tmp_path):
    alarms = tmp_path / 'alarms'
    sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=1, backlog=8)],
                       "--pool app --queue-alarm 80 --alarm-command "
                       "'echo $FCGI_GUARD_ALARM $FCGI_GUARD_POOL >> %s'" % alarms)
    clients = connect(sup.pool('app').socket_url, 12)
    try:
        sup.wait_for(lambda: 'ALARM' in read(log), 2 * 5 + 3, 'the queue alarm')
        time.sleep(5.5)                 # one more check with the queue full
    finally:
        for client in clients:
            client.close()
    # The check right after may still see new drops (SYN retries): 3 checks.
    sup.wait_for(lambda: 'back to normal' in read(log), 3 * 5 + 3, 'the end of it')
    text = read(log)
    assert text.count('ALARM') == 1
    assert 'ALARM pool app: listen queue alarm: listen queue' in text
    assert read(alarms) == 'queue app\n'


def test_crash_loop_raises_the_alarm_also_after_a_reload(supervisor_factory, tmp_path):
    crashy = PoolSpec(numprocs=2, command='python -c "import time; time.sleep(1.2); '
                                          'raise SystemExit(1)"')
    sup, log = guarded(supervisor_factory, tmp_path, [crashy], '--crash-threshold 3/30',
                       wait_running=False)
    sup.wait_for(lambda: 'ALARM' in read(log), 10, 'the crash alarm')
    time.sleep(2.5)                     # more exits, still the same episode
    text = read(log)
    assert text.count('ALARM') == 1
    assert 'ALARM pool app: crash loop: 3 unexpected exits within 30 s' in text
    sup.ctl('reload', check=True)
    sup.wait_for(lambda: read(log).count('ALARM') == 2, 15, 'the alarm after reload')


def connect(url, count):
    """count non-blocking TCP connections to a pool, none of them sending."""
    host, port = url[len('tcp://'):].rsplit(':', 1)
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect((host, int(port)))
        except BlockingIOError:
            pass
        clients.append(client)
    return clients


def test_sample_conf_runs_as_shipped(supervisor_factory, tmp_path):
    """sample_confs/fcgi-guard.conf with only its paths and port moved."""
    from supervisor_fcgi_ext.lab.harness import free_port, resolve_command
    sample = os.path.join(os.path.dirname(TESTS_DIR), 'sample_confs', 'fcgi-guard.conf')
    with open(sample) as f:
        text = f.read()
    logdir = str(tmp_path)
    text = (text.replace('/var/log/supervisor', logdir)
            .replace('127.0.0.1:9000', '127.0.0.1:%d' % free_port())
            .replace('command = fcgi-worker', 'command = ' + resolve_command('fcgi-worker'))
            .replace('command = fcgi-guard', 'command = ' + resolve_command('fcgi-guard')))
    sup = supervisor_factory([], workdir=str(tmp_path / 'sup'), extra_sections=text)
    sup.wait_for(lambda: len(sup.pids('app')) == 6, 10, '6 workers RUNNING')
    log = os.path.join(logdir, 'fcgi_guard.log')
    sup.wait_for(lambda: 'guarding app' in read(log), 10, 'the guard to start')
    info = sup.rpc.supervisor.getProcessInfo('fcgi_guard')
    assert info['statename'] == 'RUNNING'
