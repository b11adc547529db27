"""Fakes for fcgi-guard's unit tests: supervisord's XML-RPC as superlance's
tests fake it (canned answers, faults by name), statuses shaped as the real
PoolMonitor's (test_selections checks the shape), and the events."""
import os
import xmlrpc.client

# A worker's faulthandler dump as fcgi-worker writes it on SIGUSR1.
DUMP = ('Thread 0x00007f0000000002 (most recent call first):\n'
        '  File "/usr/lib/python3/threading.py", line 320 in wait\n'
        '\n'
        'Current thread 0x00007f0000000001 (most recent call first):\n'
        '  File "/app/worker.py", line 103 in demo_app\n'
        '  File "/app/worker.py", line 600 in handler\n')


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def pipe_reading(text):
    """The read end of a pipe holding ``text``, its write end closed: stdin
    as supervisord gives it, at EOF after the events."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, text.encode('utf-8'))
    os.close(write_fd)
    return os.fdopen(read_fd, 'rb', buffering=0)


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

    def getAllProcessInfo(self):
        return [{'group': group, 'name': name}
                for group in sorted(set(self.rpc.pools) | self.rpc.groups)
                for name in ('%s_00' % group, '%s_01' % group)]

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
        self.rpc.asked.append(name)
        if name in self.rpc.broken:
            raise self.rpc.broken[name]
        if name in self.rpc.groups:
            raise fault(200, 'NOT_FCGI_POOL: %s is not an [fcgi-program:x] group' % name)
        if name not in self.rpc.pools:
            raise fault(10, 'BAD_NAME: %s' % name)
        return self.rpc.pools[name]

    def getAllPoolStatus(self):
        if self.rpc.down:
            raise ConnectionRefusedError(111, 'Connection refused')
        for name in sorted(self.rpc.pools):
            if name in self.rpc.broken:     # one pool's error fails them all
                raise self.rpc.broken[name]
        return [self.rpc.pools[n] for n in sorted(self.rpc.pools)]

    def recordSlowRequest(self, name):
        self.rpc.calls.append(('recordSlowRequest', name))
        return 1

    def recordTerminatedRequest(self, name, process=None):
        self.rpc.calls.append(('recordTerminatedRequest', name, process))
        return 1

    def recordRecycle(self, name, process):
        self.rpc.calls.append(('recordRecycle', name, process))
        return 1


class DummyRPC:
    def __init__(self, pools=(), processes=None):
        self.pools = {p['name']: p for p in pools}
        self.processes = processes or {}
        self.calls = []
        self.asked = []         # pools whose getPoolStatus was called
        self.down = False
        self.broken = {}        # pool -> the exception its status raises
        self.groups = set()     # groups that are no fcgi pool
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


