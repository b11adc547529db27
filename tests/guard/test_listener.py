"""fcgi-guard's protocol loop and every policy on a fake supervisord
(superlance style: canned answers, faults by name); its choices are tested
on real statuses in test_selections.py, its pure watches in test_rules.py,
the real process and supervisord in test_guard_process.py and
test_guard_supervisord.py."""
import io
import os
import shutil
import tempfile
import unittest
import xml.parsers.expat

from guardfakes import (DummyProcess, DummyRPC, FakeClock, fault, pipe_reading, pool,
                        proc, state_event, tick)


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
        self.stdout = io.StringIO()
        # a file: --alarm-command's output goes there too
        self.stderr = open(os.path.join(self.tmp, 'stderr'), 'w+')
        self.addCleanup(self.stderr.close)
        events = pipe_reading(stdin)
        self.addCleanup(events.close)
        return self._getTargetClass()(
            rpc, parse_args(list(argv)), events, self.stdout,
            self.stderr, clock=self.clock, sleep=self.clock.sleep,
            now=lambda: 1700000000.0)

    def log_text(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def log_lines(self):
        return self.log_text().splitlines()

    # -- the protocol ---------------------------------------------------------

    def test_run_answers_every_event_ok_then_returns_at_eof(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100))])
        ps_payload = state_event('RUNNING', 'app', 'app_00', pid=100)[1]
        events = (tick(1) + 'ver:3.0 eventname:PROCESS_STATE_RUNNING len:%d\n%s'
                  % (len(ps_payload), ps_payload) + tick(2))
        guard = self._makeOne(rpc, '--max-requests', '10', stdin=events)
        guard.run()
        self.assertEqual(self.stdout.getvalue(), 'READY\nRESULT 2\nOK' * 3 + 'READY\n')
        self.assertEqual(self.log_text(), '')

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
        self.assertIn('add [rpcinterface:fcgi]', self.log_text())
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
        self.assertIn('pool app: readable again', lines[1])

    def test_bad_event_is_logged_and_acknowledged(self):
        rpc = DummyRPC([pool('app', proc('app_00', 100))])
        guard = self._makeOne(rpc, '--max-requests', '10', stdin='ver3.0 len:0\n')
        guard.run()
        self.assertEqual(self.stdout.getvalue(), 'READY\nRESULT 2\nOKREADY\n')
        lines = self.log_lines()
        self.assertEqual(len(lines), 1)
        self.assertIn("bad event from supervisord, acknowledged: header token 'ver3.0' "
                      "is not name:value", lines[0])

    def test_bad_payload_is_one_clear_line(self):
        guard = self._makeOne(DummyRPC(), '--crash-threshold', '1/60')
        guard.answer({'eventname': 'PROCESS_STATE_EXITED'}, 'processname:x oops')
        self.assertEqual([line.split('fcgi-guard: ')[1] for line in self.log_lines()],
                         ["PROCESS_STATE_EXITED failed: BadEvent: payload token 'oops' "
                          "is not name:value in 'processname:x oops'"])

    # -- one pool's failure ---------------------------------------------------

    def two_pools(self, *argv):
        """A guard of pools a (its status fails: U+FFFE in it) and b (one
        request stuck), and a group that is no fcgi pool."""
        rpc = DummyRPC([pool('a', proc('a_00', 100)),
                        pool('b', proc('b_00', 200, 'running', 31.0, uri='/?sleep=20'))],
                       {'b:b_00': DummyProcess(200)})
        rpc.broken['a'] = xml.parsers.expat.ExpatError(
            'not well-formed (invalid token): line 1, column 830')
        rpc.groups.add('guard')
        return rpc, self._makeOne(rpc, '--request-timeout', '30', *argv)

    def test_one_pool_that_fails_getallpoolstatus_leaves_the_others_guarded(self):
        rpc, guard = self.two_pools()
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertIn(('stopProcess', 'b:b_00', False), rpc.calls)
        self.assertEqual(guard.pools, {'a', 'b'})
        guard.handle_event({'eventname': 'TICK_5'}, '')    # the same errors again
        lines = self.log_lines()
        self.assertEqual([line.split('fcgi-guard: ')[1] for line in lines
                          if 'terminating' not in line and 'back' not in line], [
            'getAllPoolStatus failed, asking pool by pool: ExpatError: not well-formed '
            '(invalid token): line 1, column 830',
            'pool a: ExpatError: not well-formed (invalid token): line 1, column 830'])
        self.assertIn('pool b: terminating b_00 pid 200: GET /?sleep=20 running 31.0 s',
                      lines[2])
        del rpc.broken['a']
        rpc.asked.clear()
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertEqual(rpc.asked, [])        # all in one call again
        self.assertEqual([line.split('fcgi-guard: ')[1] for line in self.log_lines()[-2:]],
                         ['getAllPoolStatus: readable again', 'pool a: readable again'])

    def test_one_named_pool_that_fails_leaves_the_others_guarded(self):
        rpc, guard = self.two_pools('--pool', 'a', '--pool', 'b')
        rpc.broken['a'] = fault(2, 'FAILED: ValueError: boom')
        guard.handle_event({'eventname': 'TICK_5'}, '')
        self.assertIn(('stopProcess', 'b:b_00', False), rpc.calls)
        self.assertIn('pool a: FAILED: ValueError: boom', self.log_lines()[0])

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
            ('recordTerminatedRequest', 'app', 'app_00'),
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
        self.assertEqual(guard.restarts.pending, {})

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
        self.assertEqual(guard.restarts.pending, {})

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
                      self.log_text())

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
        guard.slowlog.path = os.path.join(self.tmp, 'no', 'such', 'dir')
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
        self.assertEqual(rpc.calls, [('stopProcess', 'app:app_01', False),
                                     ('recordRecycle', 'app', 'app_01')])
        rpc.processes['app:app_01'].statename = 'STOPPED'
        guard.handle_event(*state_event('STOPPED', 'app', 'app_01', pid=101))
        self.assertEqual(rpc.calls[-1], ('startProcess', 'app:app_01', False))
        rpc.processes['app:app_01'].statename = 'RUNNING'
        procs[1].update(pid=1101, requests=0)
        guard.handle_event(*state_event('RUNNING', 'app', 'app_01', pid=1101))
        self.assertEqual(rpc.calls[-2:], [('stopProcess', 'app:app_02', False),
                                          ('recordRecycle', 'app', 'app_02')])
        self.assertIn('recycling app_02 pid 102 after 20 requests', self.log_lines()[-1])
        self.assertEqual(set(guard.restarts.pending), {'app:app_02'})

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
        self.assertEqual(guard.restarts.pending, {})
        self.assertIn('app:app_00: not started again: FATAL', self.log_lines()[-1])

    # -- --queue-alarm ---------------------------------------------------------------

    def test_queue_flood_raises_one_alarm_and_runs_the_command(self):
        out = os.path.join(self.tmp, 'alarm.out')
        rpc = DummyRPC([pool('app', proc('app_00', 100), queue=7, backlog=8)])
        guard = self._makeOne(rpc, '--queue-alarm', '80', '--alarm-command',
                              'echo "$FCGI_GUARD_ALARM $FCGI_GUARD_POOL '
                              '$FCGI_GUARD_LISTEN_QUEUE" >> %s' % out)
        for _ in range(4):
            guard.handle_event({'eventname': 'TICK_5'}, '')
        rpc.pools['app']['listen_queue'] = 0
        for _ in range(2):
            guard.handle_event({'eventname': 'TICK_5'}, '')
        for command, _ in guard.alarms.running:
            command.wait(5)
        lines = self.log_lines()
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
        guard.alarms.alarm('queue', 'app', 'test')
        proc = guard.alarms.running[0][0]
        if not advance:
            proc.wait(5)
        self.clock.t += advance
        guard.handle_event({'eventname': 'PROCESS_STATE_RUNNING'}, '')
        self.assertEqual(guard.alarms.running, [])
        self.assertIsNotNone(proc.poll())
        return self.log_lines()[1:]

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
