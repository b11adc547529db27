"""The slowlog: a slow request's entry with its worker's stack.

The worker dumps its stack to stderr on a signal (fcgi-worker does on USR1,
with faulthandler); the dump is read back from supervisor's log of it, so a
worker under another user or in a container needs nothing but its log.
"""
from supervisor import childutils

from supervisor_fcgi_ext.guard.rpc import try_call
from supervisor_fcgi_ext.guard.rules import extract_stack

__all__ = ['Slowlog', 'seconds', 'STACK_WAIT']

POLL = 0.05            # seconds between reads of a worker's log
STACK_WAIT = 1.0       # longest wait for the stack dumps to be logged
STACK_QUIET = 0.15     # a dump is complete when its log stops growing this long
STACK_READ = 65536     # bytes of the worker's log read after the signal


def seconds(us):
    return '%.1f s' % (us / 1e6)


class Slowlog:
    def __init__(self, rpc, path, signame, log, clock, sleep, now):
        self.rpc, self.path, self.signame = rpc, path, signame
        self.log, self.clock, self.sleep, self.now = log, clock, sleep, now

    def record(self, slow):
        """Signal every slow worker of ``slow`` [(pool, proc)], wait once for
        their dumps, append one entry each."""
        reads = []
        for pool, proc in slow:
            name = '%s:%s' % (pool, proc['name'])
            try_call(self.log, 'slowlog %s' % name, self.rpc.fcgi.recordSlowRequest, pool)
            reads.append(self._ask_stack(name))
        entries = []
        for (pool, proc), stack in zip(slow, self._collect_stacks(reads)):
            self.log('pool %s: slow request on %s pid %d: %s %s running %s'
                     % (pool, proc['name'], proc['pid'], proc['request_method'],
                        proc['request_uri'], seconds(proc['request_duration'])))
            entries.append(self._entry(pool, proc, stack))
        try:
            with open(self.path, 'a') as f:
                f.write(''.join(entries))
        except OSError as exc:
            self.log('cannot write slowlog %s: %s' % (self.path, exc.strerror or exc))

    def _ask_stack(self, name):
        """(read method, name, offset) after signalling the worker, or a str
        saying why there is no stack."""
        if self.signame == 'none':
            return 'no stack: --slowlog-signal none'
        what = 'slowlog %s' % name
        supervisor = self.rpc.supervisor
        info = try_call(self.log, what, supervisor.getProcessInfo, name)
        if info is None:
            return 'no stack: the worker is gone'
        # With redirect_stderr the dump lands in the stdout log.
        if info['stderr_logfile']:
            tail, read = supervisor.tailProcessStderrLog, supervisor.readProcessStderrLog
        elif info['stdout_logfile']:
            tail, read = supervisor.tailProcessStdoutLog, supervisor.readProcessStdoutLog
        else:
            return "no stack: the worker's stderr is not logged"
        end = try_call(self.log, what, tail, name, 0, 0)
        if end is None or not try_call(self.log, what, supervisor.signalProcess, name,
                                       self.signame):
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
                text = try_call(self.log, 'slowlog %s' % name, read, name, offset,
                                STACK_READ)
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
                   '(not fcgi-worker?)' % (STACK_WAIT, self.signame))
        return [r if isinstance(r, str) else extract_stack(t) or missing
                for r, t in zip(reads, texts)]

    def _entry(self, pool, proc, stack):
        return ('[%s]  [pool %s] pid %d (%s)\nrequest = %s %s\nduration = %s\n%s\n\n'
                % (childutils.get_asctime(self.now()), pool, proc['pid'], proc['name'],
                   proc['request_method'], proc['request_uri'],
                   seconds(proc['request_duration']), stack))
