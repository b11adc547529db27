"""fcgi-guard: what PHP-FPM's master does for its children, for supervisor pools.

    [eventlistener:fcgi_guard]
    command = fcgi-guard --pool app --request-timeout 30 --slowlog-timeout 5
              --slowlog /var/log/app.slow --max-requests 5000 --queue-alarm 80
              --crash-threshold 5/60
    events = TICK_5,PROCESS_STATE
    buffer_size = 50

A supervisor event listener.  Every TICK_n event checks each pool (every
[fcgi-program:x] pool unless --pool names some) through the fcgi XML-RPC
namespace, so the check interval is n seconds; PROCESS_STATE events count
crashes and bring the workers it stopped back at once.  Each policy is
opt-in:

--request-timeout S  a worker busy on one request longer than S is stopped
    (its stopsignal, then KILL after --grace) and started again; counted as
    terminated_requests.  PHP-FPM's request_terminate_timeout.
--slowlog-timeout S --slowlog FILE  a request running longer than S gets its
    worker's stack appended to FILE once (the worker dumps it to stderr on
    --slowlog-signal, USR1 by default, as fcgi-worker does); counted as
    slow_requests.  PHP-FPM's request_slowlog_timeout.
--max-requests N  a worker past N requests is stopped gracefully and started
    again, one worker of a pool at a time, only while another one runs.
    PHP-FPM's pm.max_requests.
--queue-alarm PCT  a listen queue at PCT% of the backlog or more, or new
    drops, at two checks in a row: one alarm, until two good checks in a row.
--crash-threshold N/SECONDS  N unexpected exits of a pool's workers within
    SECONDS: one alarm, until the rate falls below.  PHP-FPM's
    emergency_restart_threshold, reported and not acted on.

--alarm-command CMD runs CMD with /bin/sh for each alarm, with FCGI_GUARD_*
variables in its environment.  Timeouts need workers that write the
scoreboard (requests_source 'exact'): other workers report no durations.
supervisord is found through SUPERVISOR_SERVER_URL; credentials come from
--username/--password or SUPERVISOR_USERNAME/SUPERVISOR_PASSWORD.  Logs go
to stderr; stdout is the event protocol.
"""

import argparse
import collections
import http.client
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client

from supervisor import childutils

from supervisor_fcgi_ext.guard.rules import CrashWatch, QueueWatch, extract_stack

__all__ = ['FcgiGuard', 'parse_args', 'make_rpc', 'main']

BUSY_STATES = frozenset(('reading', 'running', 'finishing'))
# Timeouts and the slowlog apply once the app runs: while a worker reads a
# request its slot still names the last one, and a silent peer is the
# worker's own I/O timeout's business (fcgi-worker --timeout).
REQUEST_STATES = frozenset(('running', 'finishing'))
POLL = 0.05            # seconds between looks while waiting on supervisord
STACK_WAIT = 1.0       # longest wait for a worker's stack dump to be logged
STACK_QUIET = 0.15     # a dump is complete when its log stops growing this long
STACK_READ = 65536     # bytes of the worker's log read after the signal
KILL_WAIT = 1.0        # longest wait for a KILLed worker to be reaped
MAX_GRACE = 10.0       # --grace blocks the listener, so it stays short
ALARM_COMMAND_TIMEOUT = 60.0
UNKNOWN_METHOD = 1     # supervisor's fault for a namespace it does not have

_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)

Pending = collections.namedtuple('Pending', 'pool pid why')
Pending.__doc__ = """A worker this guard stopped and must see running again;
why is 'recycle' or 'terminate'."""


def seconds(us):
    return '%.1f s' % (us / 1e6)


class FcgiGuard:
    def __init__(self, rpc, options, stdin, stdout, stderr,
                 clock=time.monotonic, sleep=time.sleep, now=time.time):
        self.rpc = rpc
        self.options = options
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.clock, self.sleep, self.now = clock, sleep, now
        self.pools = set(options.pools) if options.pools else None
        self.pending = {}          # 'pool:process' -> Pending
        self.slow_seen = {}        # pool -> {(pid, requests)} already logged
        self.queues = {}           # pool -> QueueWatch
        self.crashes = {}          # pool -> CrashWatch
        self.pool_errors = {}      # pool -> last error logged
        self.commands = []         # [(Popen, started)] alarm commands running

    # -- the protocol ---------------------------------------------------------

    def run(self):
        """Answer events until supervisord closes stdin."""
        while True:
            childutils.listener.ready(self.stdout)
            # childutils.listener.wait() would raise KeyError at EOF.
            line = self.stdin.readline()
            if not line:
                return
            headers = childutils.get_headers(line)
            payload = self.stdin.read(int(headers['len']))
            try:
                self.handle_event(headers, payload)
            except Exception as exc:   # never leave supervisord without an answer
                self.log('%s failed: %s: %s' % (headers.get('eventname'),
                                                type(exc).__name__,
                                                ' '.join(str(exc).split())))
                if isinstance(exc, _TRANSPORT_ERRORS):
                    self.rpc('close')()    # the next call reconnects
            childutils.listener.ok(self.stdout)

    def handle_event(self, headers, payload):
        self._reap_commands()
        event = headers.get('eventname', '')
        if event.startswith('TICK_'):
            self.check()
        elif event.startswith('PROCESS_STATE_'):
            self.process_state(event[len('PROCESS_STATE_'):],
                               childutils.get_headers(payload))

    def log(self, message):
        self.stderr.write('%s fcgi-guard: %s\n' % (childutils.get_asctime(self.now()),
                                                   message))
        self.stderr.flush()

    # -- a check --------------------------------------------------------------

    def check(self):
        statuses = self._statuses()
        slow, stuck = [], []
        for status in statuses:
            slow += self._slow_requests(status)
            stuck += self._stuck_requests(status)
        if slow:
            self._slowlog(slow)
        if stuck:
            self._terminate(stuck)
        for status in statuses:
            if self.options.queue_alarm:
                self._watch_queue(status)
            if self.options.max_requests:
                self._recycle(status)
        for name in list(self.pending):
            self._advance(name)
        for pool, watch in self.crashes.items():
            if watch.cleared():
                self.log('pool %s: crash rate back below %d exits in %g s'
                         % (pool, watch.count, watch.window))

    def _statuses(self):
        if self.options.pools:
            statuses = []
            for name in self.options.pools:
                try:
                    statuses.append(self.rpc.fcgi.getPoolStatus(name))
                except xmlrpc.client.Fault as exc:
                    self._pool_failed(name, exc)
                else:
                    self._pool_ok(name)
            return statuses
        try:
            statuses = self.rpc.fcgi.getAllPoolStatus()
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == UNKNOWN_METHOD:
                raise RuntimeError('supervisord has no fcgi namespace: '
                                   'add [rpcinterface:fcgi] to its config')
            raise
        self.pools = {s['name'] for s in statuses}
        return statuses

    def _pool_failed(self, name, exc):
        """Log a pool's error when it changes, not at every check."""
        message = 'pool %s: %s' % (name, exc.faultString)
        if self.pool_errors.get(name) != message:
            self.pool_errors[name] = message
            self.log(message)

    def _pool_ok(self, name):
        if self.pool_errors.pop(name, None):
            self.log('pool %s: reachable again' % name)

    def _candidates(self, status):
        """RUNNING workers of a pool running a request, which this guard is not
        already handling."""
        for proc in status['processes']:
            if (proc['state'] == 'RUNNING' and proc['worker_state'] in REQUEST_STATES
                    and '%s:%s' % (status['name'], proc['name']) not in self.pending):
                yield proc

    # -- slowlog ----------------------------------------------------------------

    def _slow_requests(self, status):
        if not self.options.slowlog_timeout:
            return []
        pool = status['name']
        limit = self.options.slowlog_timeout * 1e6
        seen = self.slow_seen.get(pool, set())
        over, new = set(), []
        for proc in self._candidates(status):
            if proc['request_duration'] >= limit:
                # 'requests' counts the request in flight: (pid, requests)
                # names one request, so it is logged once however long it runs.
                key = (proc['pid'], proc['requests'])
                over.add(key)
                if key not in seen:
                    new.append((pool, proc))
        self.slow_seen[pool] = over
        return new

    def _slowlog(self, slow):
        """Signal every slow worker, wait once for their dumps, write entries."""
        reads = []
        for pool, proc in slow:
            name = '%s:%s' % (pool, proc['name'])
            self._try('slowlog %s' % name, self.rpc.fcgi.recordSlowRequest, pool)
            reads.append(self._ask_stack(name))
        texts = self._collect_stacks(reads)
        entries = []
        for (pool, proc), text in zip(slow, texts):
            self.log('pool %s: slow request on %s pid %d: %s %s running %s'
                     % (pool, proc['name'], proc['pid'], proc['request_method'],
                        proc['request_uri'], seconds(proc['request_duration'])))
            entries.append(self._slowlog_entry(pool, proc, text))
        try:
            with open(self.options.slowlog, 'a') as f:
                f.write(''.join(entries))
        except OSError as exc:
            self.log('cannot write slowlog %s: %s' % (self.options.slowlog,
                                                      exc.strerror or exc))

    def _ask_stack(self, name):
        """(read method, name, offset) after signalling the worker, or a str
        saying why there is no stack."""
        signame = self.options.slowlog_signal
        if signame == 'none':
            return 'no stack: --slowlog-signal none'
        info = self._try('slowlog %s' % name, self.rpc.supervisor.getProcessInfo, name)
        if info is None:
            return 'no stack: the worker is gone'
        # With redirect_stderr the dump lands in the stdout log.
        if info['stderr_logfile']:
            tail, read = (self.rpc.supervisor.tailProcessStderrLog,
                          self.rpc.supervisor.readProcessStderrLog)
        elif info['stdout_logfile']:
            tail, read = (self.rpc.supervisor.tailProcessStdoutLog,
                          self.rpc.supervisor.readProcessStdoutLog)
        else:
            return "no stack: the worker's stderr is not logged"
        end = self._try('slowlog %s' % name, tail, name, 0, 0)
        if end is None or not self._try('slowlog %s' % name,
                                        self.rpc.supervisor.signalProcess, name, signame):
            return 'no stack: the worker is gone'
        return read, name, end[1]    # the log's size before the dump

    def _collect_stacks(self, reads):
        """Each worker's stack: its log is read until the dump in it has not
        grown for STACK_QUIET, at most STACK_WAIT for all of them."""
        texts = [''] * len(reads)
        done = [isinstance(r, str) for r in reads]
        changed = [self.clock()] * len(reads)
        deadline = self.clock() + STACK_WAIT
        while not all(done):
            for i, r in enumerate(reads):
                if done[i]:
                    continue
                read, name, offset = r
                text = self._try('slowlog %s' % name, read, name, offset, STACK_READ)
                if text is None:
                    done[i] = True
                elif text != texts[i]:
                    texts[i], changed[i] = text, self.clock()
                elif extract_stack(text) and self.clock() - changed[i] >= STACK_QUIET:
                    done[i] = True
            if self.clock() >= deadline:
                break
            self.sleep(POLL)
        missing = ('no stack: the worker wrote none within %g s of SIG%s '
                   '(not fcgi-worker?)' % (STACK_WAIT, self.options.slowlog_signal))
        return [r if isinstance(r, str) else extract_stack(t) or missing
                for r, t in zip(reads, texts)]

    def _slowlog_entry(self, pool, proc, stack):
        return ('[%s]  [pool %s] pid %d (%s)\nrequest = %s %s\nduration = %s\n%s\n\n'
                % (childutils.get_asctime(self.now()), pool, proc['pid'], proc['name'],
                   proc['request_method'], proc['request_uri'],
                   seconds(proc['request_duration']), stack))

    # -- request timeout ------------------------------------------------------------

    def _stuck_requests(self, status):
        if not self.options.request_timeout:
            return []
        limit = self.options.request_timeout * 1e6
        return [(status['name'], proc) for proc in self._candidates(status)
                if proc['request_duration'] >= limit]

    def _terminate(self, stuck):
        """Stop every stuck worker through supervisor (its stopsignal: the
        request may still finish), KILL those still there after --grace, and
        start them again.  Stopped, not just signalled: a worker that exits 0
        is not restarted under autorestart=unexpected, and a STOPPED worker
        is no crash to the crash counter."""
        stopping = []
        for pool, proc in stuck:
            name = '%s:%s' % (pool, proc['name'])
            self.log('pool %s: terminating %s pid %d: %s %s running %s '
                     '(--request-timeout %g)'
                     % (pool, proc['name'], proc['pid'], proc['request_method'],
                        proc['request_uri'], seconds(proc['request_duration']),
                        self.options.request_timeout))
            if self._try('terminate %s' % name, self.rpc.supervisor.stopProcess,
                         name, False):
                self.pending[name] = Pending(pool, proc['pid'], 'terminate')
                stopping.append(name)
                self._try('terminate %s' % name,
                          self.rpc.fcgi.recordTerminatedRequest, pool)
        left = self._wait_stopped(stopping, self.options.grace)
        for name in left:
            self.log('%s still running after --grace %g s: KILL'
                     % (name, self.options.grace))
            self._try('kill %s' % name, self.rpc.supervisor.signalProcess, name, 'KILL')
        self._wait_stopped(left, KILL_WAIT)
        for name in stopping:
            self._advance(name)

    def _wait_stopped(self, names, timeout):
        """Names of those still stopping after at most ``timeout`` seconds."""
        deadline = self.clock() + timeout
        left = list(names)
        while left:
            left = [n for n in left if self._state(n)[0] == 'STOPPING']
            if not left or self.clock() >= deadline:
                break
            self.sleep(POLL)
        return left

    def _state(self, name):
        info = self._try('state of %s' % name, self.rpc.supervisor.getProcessInfo, name)
        return (info['statename'], info['pid']) if info else (None, 0)

    # -- recycling ----------------------------------------------------------------

    def _recycle(self, status):
        """Stop one worker past --max-requests gracefully; _advance starts it
        again.  One per pool at a time, and only while another worker of the
        pool is RUNNING and not being handled, so the pool keeps accepting."""
        pool = status['name']
        if any(p.pool == pool and p.why == 'recycle' for p in self.pending.values()):
            return
        running = [p for p in status['processes'] if p['state'] == 'RUNNING'
                   and '%s:%s' % (pool, p['name']) not in self.pending]
        due = [p for p in running if p['requests'] >= self.options.max_requests]
        if not due or len(running) < 2:
            return
        # Idle first: its stop is immediate; then the one with most requests.
        proc = min(due, key=lambda p: (p['worker_state'] in BUSY_STATES,
                                       -p['requests']))
        name = '%s:%s' % (pool, proc['name'])
        if self._try('recycle %s' % name, self.rpc.supervisor.stopProcess, name, False):
            self.pending[name] = Pending(pool, proc['pid'], 'recycle')
            self.log('pool %s: recycling %s pid %d after %d requests '
                     '(--max-requests %d)' % (pool, proc['name'], proc['pid'],
                                              proc['requests'],
                                              self.options.max_requests))

    def _advance(self, name):
        """Move a worker this guard stopped on: start it once STOPPED, forget
        it once RUNNING again (then recycle the pool's next one) or once it
        ended again (supervisor's autorestart decides)."""
        if name not in self.pending:
            return
        state, pid = self._state(name)
        pending = self.pending[name]
        if state == 'STOPPED':
            self._try('start %s' % name, self.rpc.supervisor.startProcess, name, False)
        elif state == 'RUNNING' and pid != pending.pid:
            del self.pending[name]
            self.log('%s back: pid %d replaces %d' % (name, pid, pending.pid))
            if pending.why == 'recycle':
                status = self._try('pool %s' % pending.pool,
                                   self.rpc.fcgi.getPoolStatus, pending.pool)
                if status:
                    self._recycle(status)
        elif state in (None, 'EXITED', 'FATAL'):
            # The new worker ended: supervisor's autorestart decides now.
            del self.pending[name]
            self.log('%s: not started again: %s' % (name, state or 'gone'))

    # -- alarms -----------------------------------------------------------------

    def _watch_queue(self, status):
        pool = status['name']
        watch = self.queues.setdefault(pool, QueueWatch(self.options.queue_alarm))
        change, reasons = watch.check(status['listen_queue'],
                                      status['listen_queue_len'],
                                      status['listen_drops'])
        if change == 'raise':
            self.alarm('queue', pool, 'listen queue alarm: %s' % ', '.join(reasons),
                       LISTEN_QUEUE=status['listen_queue'],
                       LISTEN_QUEUE_LEN=status['listen_queue_len'],
                       LISTEN_DROPS=status['listen_drops'])
        elif change == 'clear':
            self.log('pool %s: listen queue back to normal (%d of %d)'
                     % (pool, status['listen_queue'], status['listen_queue_len']))

    def process_state(self, state, fields):
        name = '%s:%s' % (fields.get('groupname'), fields.get('processname'))
        if name in self.pending:
            self._advance(name)
        if not self.options.crash_threshold:
            return
        if state == 'BACKOFF' or (state == 'EXITED' and fields.get('expected') == '0'):
            pool = fields.get('groupname')
            if self.pools is None:
                self._statuses()
            if pool not in self.pools:
                return
            count, window = self.options.crash_threshold
            watch = self.crashes.setdefault(pool, CrashWatch(count, window, self.clock))
            if watch.exited():
                self.alarm('crash', pool, 'crash loop: %d unexpected exits within '
                           '%g s, last %s %s from %s'
                           % (len(watch.exits), window, fields.get('processname'),
                              state, fields.get('from_state')),
                           EXITS=len(watch.exits), WINDOW=window,
                           PROCESS=fields.get('processname'))

    def alarm(self, kind, pool, message, **details):
        self.log('ALARM pool %s: %s' % (pool, message))
        command = self.options.alarm_command
        if not command:
            return
        env = dict(os.environ, FCGI_GUARD_ALARM=kind, FCGI_GUARD_POOL=pool,
                   FCGI_GUARD_MESSAGE=message)
        env.update(('FCGI_GUARD_' + k, str(v)) for k, v in details.items())
        try:
            # Its stdout must not reach ours: that is the event protocol.
            proc = subprocess.Popen(['/bin/sh', '-c', command], env=env,
                                    stdin=subprocess.DEVNULL,
                                    stdout=self.stderr, stderr=self.stderr)
        except OSError as exc:
            self.log('--alarm-command failed to start: %s' % (exc.strerror or exc))
            return
        self.commands.append((proc, self.clock()))

    def _reap_commands(self):
        running = []
        for proc, started in self.commands:
            status = proc.poll()
            if status is None and self.clock() - started > ALARM_COMMAND_TIMEOUT:
                proc.kill()
                proc.wait()
                self.log('--alarm-command killed after %g s' % ALARM_COMMAND_TIMEOUT)
            elif status is None:
                running.append((proc, started))
            elif status:
                self.log('--alarm-command exited with status %d' % status)
        self.commands = running

    def _try(self, what, method, *args):
        """method(*args), or None after logging its Fault: a worker can end or
        exit between a status and the call that acts on it."""
        try:
            return method(*args)
        except xmlrpc.client.Fault as exc:
            self.log('%s: %s' % (what, exc.faultString))
            return None


# -- command line ---------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, exit 2: the line supervisord's log shows."""
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


def _positive(text):
    value = float(text)
    if not value > 0 or value == float('inf'):
        raise ValueError(text)
    return value


def _crash_threshold(text):
    count, sep, window = text.partition('/')
    if not sep or int(count) < 1:
        raise ValueError(text)
    return int(count), _positive(window)


def _percent(text):
    value = float(text)
    if not 0 < value <= 100:
        raise ValueError(text)
    return value


def _count(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _signal_name(text):
    name = text.upper()
    if name == 'NONE':
        return 'none'
    name = name[3:] if name.startswith('SIG') else name
    if not hasattr(signal, 'SIG' + name):
        raise ValueError(text)
    return name


_positive.__name__ = 'seconds > 0'
_crash_threshold.__name__ = 'N/SECONDS'
_percent.__name__ = 'percentage in (0, 100]'
_count.__name__ = 'integer >= 1'
_signal_name.__name__ = 'signal name'


def parse_args(argv):
    parser = _Parser(prog='fcgi-guard', description=__doc__.split('\n\n')[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    add = parser.add_argument
    add('--pool', dest='pools', action='append', metavar='NAME',
        help='a pool to guard; repeat for more (default: every fcgi pool)')
    add('--request-timeout', type=_positive, metavar='S')
    add('--grace', type=_positive, default=2.0, metavar='S',
        help='after --request-timeout, KILL when still running after S '
             '(default 2, at most %g)' % MAX_GRACE)
    add('--slowlog-timeout', type=_positive, metavar='S')
    add('--slowlog', metavar='FILE')
    add('--slowlog-signal', type=_signal_name, default='USR1', metavar='SIG',
        help="the signal that makes a worker dump its stack; 'none': no stacks")
    add('--max-requests', type=_count, metavar='N')
    add('--queue-alarm', type=_percent, metavar='PCT')
    add('--crash-threshold', type=_crash_threshold, metavar='N/SECONDS')
    add('--alarm-command', metavar='CMD')
    add('--username', help='default: $SUPERVISOR_USERNAME')
    add('--password', help='default: $SUPERVISOR_PASSWORD (safer: not in ps)')
    args = parser.parse_args(argv)
    if (args.slowlog_timeout is None) != (args.slowlog is None):
        parser.error('--slowlog-timeout and --slowlog go together')
    if args.grace > MAX_GRACE:
        parser.error('--grace must be at most %g seconds' % MAX_GRACE)
    if not (args.request_timeout or args.slowlog or args.max_requests
            or args.queue_alarm or args.crash_threshold):
        parser.error('nothing to guard: give --request-timeout, --slowlog-timeout, '
                     '--max-requests, --queue-alarm or --crash-threshold')
    return args


def make_rpc(args, environ):
    """childutils' proxy for SUPERVISOR_SERVER_URL; --username/--password
    override SUPERVISOR_USERNAME/SUPERVISOR_PASSWORD (supervisor sets neither)."""
    env = dict(environ)
    if args.username is not None:
        env['SUPERVISOR_USERNAME'] = args.username
    if args.password is not None:
        env['SUPERVISOR_PASSWORD'] = args.password
    return childutils.getRPCInterface(env)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.environ.get('SUPERVISOR_SERVER_URL'):
        sys.stderr.write('fcgi-guard: must be run as a supervisor event listener '
                         '(SUPERVISOR_SERVER_URL is not set)\n')
        return 2
    # Header len counts characters: no newline translation on the way in.
    sys.stdin.reconfigure(newline='')
    guard = FcgiGuard(make_rpc(args, os.environ), args,
                      sys.stdin, sys.stdout, sys.stderr)
    guard.log('guarding %s' % (', '.join(args.pools) if args.pools
                               else 'every fcgi pool'))
    guard.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
