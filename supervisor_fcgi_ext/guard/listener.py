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

--request-timeout S  a worker busy on one request longer than S (frozen by
    SIGSTOP in it too) is stopped (its stopsignal, then KILL after --grace)
    and started again; counted as terminated_requests.  PHP-FPM's
    request_terminate_timeout.
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
variables in its environment.  --rpc-timeout S (default 10) bounds each
XML-RPC call: past it the guard logs one line and acknowledges the event;
so is an event it cannot read (a malformed header).  A pool whose status
cannot be read is logged (once per change) and the others are still
guarded.  Timeouts need workers that write the scoreboard (requests_source
'exact'): other workers report no durations.
supervisord is found through SUPERVISOR_SERVER_URL; credentials come from
--username/--password or SUPERVISOR_USERNAME/SUPERVISOR_PASSWORD.  Logs go
to stderr; stdout is the event protocol.
"""

import argparse
import os
import signal
import sys
import time

from supervisor import childutils

from supervisor_fcgi_ext.guard.alarms import Alarms
from supervisor_fcgi_ext.guard.protocol import BadEvent, EventReader, parse_fields
from supervisor_fcgi_ext.guard.restarts import Restarts
from supervisor_fcgi_ext.guard.rpc import POOL_ERRORS, TRANSPORT_ERRORS, make_rpc, one_line
from supervisor_fcgi_ext.guard.rules import CrashWatch, QueueWatch
from supervisor_fcgi_ext.guard.selections import (is_crash, queue_figures, slow_requests,
                                                   stuck_requests)
from supervisor_fcgi_ext.guard.slowlog import Slowlog
from supervisor_fcgi_ext.common.faults import Faults

__all__ = ['FcgiGuard', 'parse_args', 'make_rpc', 'main']

MAX_GRACE = 10.0       # --grace blocks the listener, so it stays short
UNKNOWN_METHOD = 1     # supervisor's fault for a namespace it does not have
ALL_POOLS = 'getAllPoolStatus'


class FcgiGuard:
    """The policies' memory between events; what to do is chosen in
    selections and rules, done in slowlog, restarts and alarms."""

    def __init__(self, rpc, options, stdin, stdout, stderr,
                 clock=time.monotonic, sleep=time.sleep, now=time.time):
        self.rpc = rpc
        self.options = options
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.clock, self.now = clock, now
        self.pools = set(options.pools) if options.pools else None
        self.slow_seen = {}        # pool -> {(pid, requests)} already logged
        self.queues = {}           # pool -> QueueWatch
        self.crashes = {}          # pool -> CrashWatch
        self.errors = {}           # pool (or ALL_POOLS) -> last error logged
        self.restarts = Restarts(rpc, options, self.log, clock, sleep)
        self.slowlog = Slowlog(rpc, options.slowlog, options.slowlog_signal,
                               self.log, clock, sleep, now)
        self.alarms = Alarms(options.alarm_command, self.log, stderr, clock)

    # -- the protocol ---------------------------------------------------------

    def run(self):
        """Answer events until supervisord closes stdin (a pipe)."""
        events = EventReader(self.stdin.fileno())
        while True:
            childutils.listener.ready(self.stdout)
            try:
                event = events.next_event()
            except BadEvent as exc:
                self.log('bad event from supervisord, acknowledged: %s' % exc)
            else:
                if event is None:
                    return
                self.answer(*event)
            childutils.listener.ok(self.stdout)

    def answer(self, headers, payload):
        """handle_event, whatever happens in it: supervisord gets an answer."""
        try:
            self.handle_event(headers, payload)
        except Exception as exc:
            self.log('%s failed: %s' % (headers.get('eventname'), one_line(exc)))
            if isinstance(exc, TRANSPORT_ERRORS):
                self.rpc('close')()    # the next call reconnects

    def handle_event(self, headers, payload):
        self.alarms.reap()
        event = headers.get('eventname', '')
        if event.startswith('TICK_'):
            self.check()
        elif event.startswith('PROCESS_STATE_'):
            self.process_state(event[len('PROCESS_STATE_'):],
                               parse_fields(payload, 'payload'))

    def log(self, message):
        self.stderr.write('%s fcgi-guard: %s\n' % (childutils.get_asctime(self.now()),
                                                   message))
        self.stderr.flush()

    # -- a check --------------------------------------------------------------

    def check(self):
        options, pending = self.options, self.restarts.pending
        statuses = self._statuses()
        slow, stuck = [], []
        for status in statuses:
            pool = status['name']
            if options.slowlog_timeout:
                new, self.slow_seen[pool] = slow_requests(
                    status, options.slowlog_timeout, self.slow_seen.get(pool, ()), pending)
                slow += [(pool, proc) for proc in new]
            if options.request_timeout:
                stuck += [(pool, proc) for proc in
                          stuck_requests(status, options.request_timeout, pending)]
        if slow:
            self.slowlog.record(slow)
        if stuck:
            self.restarts.terminate(stuck)
        for status in statuses:
            if options.queue_alarm:
                self._watch_queue(status)
            if options.max_requests:
                self.restarts.recycle(status)
        self.restarts.advance_all()
        for pool, watch in self.crashes.items():
            if watch.cleared():
                self.log('pool %s: crash rate back below %d exits in %g s'
                         % (pool, watch.count, watch.window))

    def _statuses(self):
        """The status of every pool guarded that can be read.  One pool's
        failure is that pool's: when getAllPoolStatus fails, each pool is
        asked on its own and the others are still guarded."""
        if self.options.pools:
            return self._each(self.options.pools)
        try:
            statuses = self.rpc.fcgi.getAllPoolStatus()
        except POOL_ERRORS as exc:
            if getattr(exc, 'faultCode', None) == UNKNOWN_METHOD:
                raise RuntimeError('supervisord has no fcgi namespace: '
                                   'add [rpcinterface:fcgi] to its config')
            self._failed(ALL_POOLS, '%s failed, asking pool by pool: %s'
                         % (ALL_POOLS, one_line(exc)))
        else:
            self.pools = {s['name'] for s in statuses}
            for name in [ALL_POOLS] + sorted(self.pools):
                self._readable(name)
            return statuses
        groups = {p['group'] for p in self.rpc.supervisor.getAllProcessInfo()}
        self.pools = set(groups)
        return self._each(sorted(groups), discover=True)

    def _each(self, names, discover=False):
        """fcgi.getPoolStatus of each of ``names``; with ``discover``, a group
        that is no fcgi pool is skipped in silence (and not a pool)."""
        statuses = []
        for name in names:
            try:
                statuses.append(self.rpc.fcgi.getPoolStatus(name))
            except POOL_ERRORS as exc:
                if discover and getattr(exc, 'faultCode', None) == Faults.NOT_FCGI_POOL:
                    self.pools.discard(name)
                else:
                    self._failed(name, 'pool %s: %s' % (name, one_line(exc)))
            else:
                self._readable(name)
        return statuses

    def _failed(self, key, message):
        """Log an error when it changes, not at every check."""
        if self.errors.get(key) != message:
            self.errors[key] = message
            self.log(message)

    def _readable(self, key):
        if self.errors.pop(key, None):
            self.log('%s: readable again' % (key if key == ALL_POOLS else 'pool ' + key))

    # -- alarms -----------------------------------------------------------------

    def _watch_queue(self, status):
        pool = status['name']
        watch = self.queues.setdefault(pool, QueueWatch(self.options.queue_alarm))
        queue, backlog, drops = queue_figures(status)
        change, reasons = watch.check(queue, backlog, drops)
        if change == 'raise':
            self.alarms.alarm('queue', pool, 'listen queue alarm: %s' % ', '.join(reasons),
                              LISTEN_QUEUE=queue, LISTEN_QUEUE_LEN=backlog,
                              LISTEN_DROPS=drops)
        elif change == 'clear':
            self.log('pool %s: listen queue back to normal (%d of %d)'
                     % (pool, queue, backlog))

    def process_state(self, state, fields):
        pool = fields.get('groupname')
        self.restarts.advance('%s:%s' % (pool, fields.get('processname')))
        if not self.options.crash_threshold or not is_crash(state, fields):
            return
        if self.pools is None:
            self._statuses()
        if pool not in self.pools:
            return
        count, window = self.options.crash_threshold
        watch = self.crashes.setdefault(pool, CrashWatch(count, window, self.clock))
        if watch.exited():
            self.alarms.alarm('crash', pool, 'crash loop: %d unexpected exits within '
                              '%g s, last %s %s from %s'
                              % (len(watch.exits), window, fields.get('processname'),
                                 state, fields.get('from_state')),
                              EXITS=len(watch.exits), WINDOW=window,
                              PROCESS=fields.get('processname'))


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
    add('--rpc-timeout', type=_positive, default=10.0, metavar='S',
        help='give up an XML-RPC call to supervisord after S (default 10)')
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


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.environ.get('SUPERVISOR_SERVER_URL'):
        sys.stderr.write('fcgi-guard: must be run as a supervisor event listener '
                         '(SUPERVISOR_SERVER_URL is not set)\n')
        return 2
    guard = FcgiGuard(make_rpc(args, os.environ), args,
                      sys.stdin, sys.stdout, sys.stderr)
    guard.log('guarding %s' % (', '.join(args.pools) if args.pools
                               else 'every fcgi pool'))
    guard.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
