"""Stopping and starting workers: --request-timeout and --max-requests.

Stopped through supervisor, not just signalled: a worker that exits 0 is
not restarted under autorestart=unexpected, and a STOPPED worker is no crash
to the crash counter.  Each worker stopped here is remembered (``pending``)
until supervisor runs a new one in its place.
"""
import collections

from supervisor_fcgi_ext.guard.rpc import try_call
from supervisor_fcgi_ext.guard.selections import next_recycle, process_name
from supervisor_fcgi_ext.guard.slowlog import seconds

__all__ = ['Pending', 'Restarts', 'KILL_WAIT']

POLL = 0.05            # seconds between looks while waiting on supervisord
KILL_WAIT = 1.0        # longest wait for a KILLed worker to be reaped

Pending = collections.namedtuple('Pending', 'pool pid why')
Pending.__doc__ = """A worker this guard stopped and must see running again;
why is 'recycle' or 'terminate'."""


class Restarts:
    def __init__(self, rpc, options, log, clock, sleep):
        self.rpc, self.options = rpc, options
        self.log, self.clock, self.sleep = log, clock, sleep
        self.pending = {}          # 'pool:process' -> Pending

    def _try(self, what, method, *args):
        return try_call(self.log, what, method, *args)

    def terminate(self, stuck):
        """Stop every stuck worker of ``stuck`` [(pool, proc)] (its
        stopsignal: the request may still finish), KILL those still there
        after --grace, and start them again.  A worker frozen by SIGSTOP gets
        its stopsignal only when it runs again: the KILL ends it."""
        stopping = []
        for pool, proc in stuck:
            name = '%s:%s' % (pool, proc['name'])
            # the status's 'frozen': stopped by a signal (SIGSTOP, a debugger)
            self.log('pool %s: terminating %s pid %d: %s %s running %s%s '
                     '(--request-timeout %g)'
                     % (pool, proc['name'], proc['pid'], proc['request_method'],
                        proc['request_uri'], seconds(proc['request_duration']),
                        ', frozen' if proc.get('frozen') else '',
                        self.options.request_timeout))
            if self._try('terminate %s' % name, self.rpc.supervisor.stopProcess,
                         name, False):
                self.pending[name] = Pending(pool, proc['pid'], 'terminate')
                stopping.append(name)
                self._try('terminate %s' % name,
                          self.rpc.fcgi.recordTerminatedRequest, pool, proc['name'])
        left = self._wait_stopped(stopping, self.options.grace)
        for name in left:
            self.log('%s still running after --grace %g s: KILL'
                     % (name, self.options.grace))
            self._try('kill %s' % name, self.rpc.supervisor.signalProcess, name, 'KILL')
        self._wait_stopped(left, KILL_WAIT)
        for name in stopping:
            self.advance(name)

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

    def recycle(self, status):
        """Stop the pool's next worker past --max-requests gracefully (one
        per pool at a time); advance() starts it again."""
        pool = status['name']
        if any(p.pool == pool and p.why == 'recycle' for p in self.pending.values()):
            return
        proc = next_recycle(status, self.options.max_requests, self.pending)
        if proc is None:
            return
        name = process_name(status, proc)
        if self._try('recycle %s' % name, self.rpc.supervisor.stopProcess, name, False):
            self.pending[name] = Pending(pool, proc['pid'], 'recycle')
            self._try('recycle %s' % name, self.rpc.fcgi.recordRecycle, pool, proc['name'])
            self.log('pool %s: recycling %s pid %d after %d requests '
                     '(--max-requests %d)' % (pool, proc['name'], proc['pid'],
                                              proc['requests'],
                                              self.options.max_requests))

    def advance(self, name):
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
                    self.recycle(status)
        elif state in (None, 'EXITED', 'FATAL'):
            del self.pending[name]
            self.log('%s: not started again: %s' % (name, state or 'gone'))

    def advance_all(self):
        for name in list(self.pending):
            self.advance(name)
