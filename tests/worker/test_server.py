"""fcgi-worker as supervisord runs it: real processes with a listening socket
as fd 0, real FastCGI, real signals, and the scoreboard slot they fill."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

import pytest
from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_BeginRequestBody,
    FCGI_PARAMS, FCGI_RESPONDER, FCGI_STDIN, encode_pair,
)

from supervisor_fcgi_ext.worker import slotwriter
from supervisor_fcgi_ext.worker import server as worker
from supervisor_fcgi_ext.lab.fcgiclient import (
    FastCGIConnection, FastCGIError, cgi_params, fcgi_request,
)
from supervisor_fcgi_ext.lab.harness import PoolSpec
from supervisor_fcgi_ext.common.scoreboard import ENV_VAR, ScoreboardError, Slot, slot_path
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir, read_pool, read_slot

WORKER = [sys.executable, '-m', 'supervisor_fcgi_ext.worker.server']
APP = '''
import os, time

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/boom':
        raise RuntimeError('boom')
    if path == '/echo':
        body = environ['wsgi.input'].read()
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [body]
    if path == '/big':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'x' * 1000000]
    if path == '/stream':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return (b'chunk%d;' % i for i in range(5))      # one send each
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'app %d' % os.getpid()]
'''


def pid_of(response):
    assert response.status == 200, response
    return int(response.body.split(b':')[1])


class Pool:
    """A listening socket and the workers serving it, like an fcgi-program."""

    def __init__(self, tmp_path, kind='unix'):
        self.tmp_path = tmp_path
        tmp_path.mkdir(exist_ok=True)
        self.board = str(tmp_path / 'board')
        ensure_pool_dir(self.board, 'pool')
        if kind == 'unix':
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(tmp_path / 'pool.sock'))
            self.address = 'unix://%s' % (tmp_path / 'pool.sock')
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(('127.0.0.1', 0))
            self.address = 'tcp://127.0.0.1:%d' % self.sock.getsockname()[1]
        self.sock.listen(64)
        self.procs = []

    def start(self, *args, board=True, cwd=None, env=None):
        env = dict(os.environ, SUPERVISOR_GROUP_NAME='pool', **(env or {}))
        env.pop(ENV_VAR, None)
        if board:
            env[ENV_VAR] = self.board
        err = open(self.tmp_path / ('worker%d.err' % len(self.procs)), 'w+')
        proc = subprocess.Popen(WORKER + list(args), stdin=self.sock.fileno(),
                                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        proc.err = err
        self.procs.append(proc)
        return proc

    def request(self, uri='/', **kwargs):
        kwargs.setdefault('timeout', 10)
        return fcgi_request(self.address, uri, **kwargs)

    def slot(self, proc):
        return read_slot(slot_path(self.board, 'pool', proc.pid))

    def settled(self, proc):
        """The slot once the worker is idle: it answers first, then counts."""
        assert wait_for(lambda: self.state(proc) == 'idle')
        return self.slot(proc)

    def state(self, proc, field='state'):
        """The worker's state (or another field) in its slot, None while
        there is no readable slot."""
        try:
            return getattr(self.slot(proc), field)
        except ScoreboardError:
            return None

    def connect(self):
        family = socket.AF_UNIX if self.address.startswith('unix') else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.sock.getsockname())
        return sock

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(10)
            proc.err.close()
        self.sock.close()


def stderr_of(proc):
    proc.err.flush()
    proc.err.seek(0)
    return proc.err.read()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def pool(tmp_path):
    pools = []

    def make(kind='unix'):
        pools.append(Pool(tmp_path / str(len(pools)), kind))
        return pools[-1]
    yield make
    for p in pools:
        p.stop()


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / 'myapp.py').write_text(APP)
    return str(tmp_path)


def in_background(fn, *args, **kwargs):
    """Run fn in a thread; .result() joins and returns or re-raises."""
    box = {}

    def run():
        try:
            box['value'] = fn(*args, **kwargs)
        except BaseException as exc:
            box['error'] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout=15):
        thread.join(timeout)
        assert not thread.is_alive()
        if 'error' in box:
            raise box['error']
        return box['value']
    thread.result = result
    return thread


# -- serving ---------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['unix', 'tcp'])
def test_demo_app_answers_its_pid_on_unix_and_tcp(pool, kind):
    p = pool(kind)
    proc = p.start()
    response = p.request('/')
    assert response.body == b'ProcessId: %d\n' % proc.pid
    assert response.header('Content-Type') == 'text/plain'
    assert response.header('Content-Length') == str(len(response.body))
    assert 'serving the demo app on %s' % kind in stderr_of(proc)


def test_sleep_parameter(pool):
    p = pool()
    p.start()
    began = time.monotonic()
    assert p.request('/?sleep=0.3').status == 200
    assert time.monotonic() - began >= 0.3
    for bad in ('abc', '-1', 'nan', 'inf', ''):
        response = p.request('/?sleep=' + bad)
        assert response.status == 400, bad
        assert b'sleep' in response.body


def test_threads_serve_requests_at_once(pool):
    p = pool()
    proc = p.start('--threads', '3')
    pid_of(p.request('/'))      # started
    began = time.monotonic()
    calls = [in_background(p.request, '/?sleep=0.5') for _ in range(3)]
    pids = {pid_of(call.result()) for call in calls}
    assert time.monotonic() - began < 1.2
    assert pids == {proc.pid}
    slot = p.settled(proc)
    assert (slot.threads, slot.requests, slot.active, slot.state) == (3, 4, 0, 'idle')


def test_app_module_from_the_working_directory(pool, app_dir):
    p = pool()
    proc = p.start('myapp', cwd=app_dir)
    assert p.request('/').body == b'app %d' % proc.pid
    assert p.request('/echo', method='POST', body=b'hello' * 1000).body == b'hello' * 1000
    assert p.request('/big').body == b'x' * 1000000
    assert p.request('/stream').body == b''.join(b'chunk%d;' % i for i in range(5))
    response = p.request('/boom')
    assert response.status == 500 and b'boom' in response.stderr
    assert p.request('/').status == 200
    slot = p.settled(proc)
    assert (slot.requests, slot.exceptions, slot.last_status) == (6, 1, 200)
    assert 'RuntimeError: boom' in stderr_of(proc)


def test_web_server_addrs_limit_who_may_connect_over_tcp(pool):
    p = pool('tcp')
    p.start(env={'FCGI_WEB_SERVER_ADDRS': '127.0.0.2, 10.0.0.1'})
    with pytest.raises(FastCGIError, match='closed the connection|lost before'):
        p.request('/')
    allowed = pool('tcp')
    proc = allowed.start(env={'FCGI_WEB_SERVER_ADDRS': '10.0.0.1,127.0.0.1'})
    assert pid_of(allowed.request('/')) == proc.pid
    unix = pool('unix')
    proc = unix.start(env={'FCGI_WEB_SERVER_ADDRS': '10.0.0.1'})
    assert pid_of(unix.request('/')) == proc.pid
    assert 'FCGI_WEB_SERVER_ADDRS ignored' in stderr_of(proc)


def test_streamed_answers_over_tcp_keep_alive_wait_for_no_delayed_ack(
        supervisor_factory, nginx_factory, app_dir):
    # nginx keeps the TCP connection to the worker; a streamed answer leaves
    # in several small sends, and with Nagle each waits for nginx's delayed
    # ACK (about 40 ms a request) unless the worker sets TCP_NODELAY.
    sup = supervisor_factory([PoolSpec(command='fcgi-worker myapp', numprocs=1,
                                       socket='tcp', extra={'directory': app_dir})])
    nginx = nginx_factory(sup.pools[0].socket_url, keepalive=True)
    client = http.client.HTTPConnection('127.0.0.1', nginx.port, timeout=10)
    try:
        latencies = []
        for _ in range(50):
            began = time.monotonic()
            client.request('GET', '/stream')
            response = client.getresponse()
            assert response.read() == b''.join(b'chunk%d;' % i for i in range(5))
            latencies.append(time.monotonic() - began)
    finally:
        client.close()
    assert statistics.median(latencies) < 0.010, sorted(latencies)


def test_keep_alive_connection_counts_one_connection(pool):
    p = pool()
    proc = p.start()
    with FastCGIConnection(p.address, timeout=10) as conn:
        for _ in range(5):
            assert pid_of(conn.request('/')) == proc.pid
    slot = p.settled(proc)
    assert (slot.accepted_conn, slot.requests, slot.protocol_errors) == (1, 5, 0)


# -- the scoreboard ------------------------------------------------------------------

# Each worker writes its slot with the C writer where it is built; both
# writers are run through the real worker.
WRITER_OPTIONS = [pytest.param([], id='default-writer'),
                  pytest.param(['--python-scoreboard'], id='python-writer')]


def writer_named_in(proc, options):
    kind = 'C' if slotwriter.CSlotWriter and not options else 'Python'
    return '(%s writer)' % kind in stderr_of(proc)


@pytest.mark.parametrize('options', WRITER_OPTIONS)
def test_scoreboard_counts_every_request_per_pid(pool, options):
    p = pool()
    procs = [p.start(*options) for _ in range(3)]
    served = {}
    calls = [in_background(p.request, '/?sleep=0.05') for _ in range(12)]
    for call in calls + [None] * 18:
        pid = pid_of(call.result() if call else p.request('/'))
        served[pid] = served.get(pid, 0) + 1
    assert sum(served.values()) == 30
    for proc in procs:
        p.settled(proc)
    slots = read_pool(p.board, 'pool', [proc.pid for proc in procs])
    for proc in procs:
        slot = slots[proc.pid]
        assert isinstance(slot, Slot), slot
        assert slot.requests == served.get(proc.pid, 0)
        assert slot.accepted_conn == slot.requests
        assert (slot.state, slot.active, slot.protocol_errors) == ('idle', 0, 0)
        assert slot.bytes_sent > 0 and slot.last_status == 200
        assert writer_named_in(proc, options)


@pytest.mark.parametrize('options', WRITER_OPTIONS)
def test_scoreboard_shows_the_running_request(pool, options):
    p = pool()
    proc = p.start(*options)
    call = in_background(p.request, '/?sleep=0.6', method='POST', body=b'12345')
    assert wait_for(lambda: p.state(proc) == 'running')
    slot = p.slot(proc)
    assert (slot.request_method, slot.request_uri, slot.content_length) == \
        ('POST', '/?sleep=0.6', 5)
    time.sleep(0.2)
    assert p.slot(proc).request_duration_us >= 200000
    call.result()
    slot = p.settled(proc)
    assert 600000 <= slot.request_duration_us < 5000000
    assert slot.last_request_memory > 1 << 20
    assert 0 <= slot.last_request_cpu < 50     # it slept
    assert writer_named_in(proc, options)


def test_scoreboard_shows_reading_while_the_peer_is_slow_to_ask(pool):
    p = pool()
    proc = p.start()
    pid_of(p.request('/first?x=1'))
    sock = p.connect()
    began = time.time()
    sock.sendall(begin())
    assert wait_for(lambda: p.state(proc) == 'reading')
    time.sleep(0.3)
    slot = p.slot(proc)
    # a new read: nothing of the last request, timed from the accept
    assert (slot.request_method, slot.request_uri, slot.content_length) == ('', '', 0)
    assert began - 0.1 <= slot.request_start and slot.request_duration_us >= 300000
    assert (slot.accepted_conn, slot.connections) == (2, 1)
    asked = time.time()
    sock.sendall(record(FCGI_PARAMS, params('/?sleep=0.5')) + record(FCGI_PARAMS)
                 + record(FCGI_STDIN))
    assert wait_for(lambda: p.state(proc) == 'running')
    slot = p.slot(proc)
    assert (slot.request_method, slot.request_uri) == ('GET', '/?sleep=0.5')
    assert slot.request_start >= asked - 0.05    # the read is not the app's time
    assert read_until_closed(sock).startswith(b'\x01\x06')    # FCGI_STDOUT
    sock.close()
    slot = p.settled(proc)
    assert (slot.accepted_conn, slot.requests, slot.protocol_errors, slot.connections) == \
        (2, 2, 0, 0)
    assert 500000 <= slot.last_request_duration_us < 800000


def test_scoreboard_counts_held_connections(pool):
    p = pool()
    proc = p.start()
    with FastCGIConnection(p.address, timeout=10) as conn:
        pid_of(conn.request('/kept'))
        # between requests on a kept-alive connection: reading the next one
        assert wait_for(lambda: p.state(proc) == 'reading')
        slot = p.slot(proc)
        assert (slot.connections, slot.request_uri, slot.last_status) == (1, '', 200)
        pid_of(conn.request('/again'))
    slot = p.settled(proc)
    assert (slot.connections, slot.accepted_conn, slot.requests) == (0, 1, 2)


def test_scoreboard_counts_held_connections_with_threads(pool):
    p = pool()
    proc = p.start('--threads', '3')
    first = FastCGIConnection(p.address, timeout=10)
    second = FastCGIConnection(p.address, timeout=10)
    try:
        pid_of(first.request('/'))
        pid_of(second.request('/'))
        assert wait_for(lambda: p.state(proc, 'connections') == 2)
        first.close()
        assert wait_for(lambda: p.state(proc, 'connections') == 1)
    finally:
        first.close()
        second.close()
    assert wait_for(lambda: p.state(proc, 'connections') == 0)
    slot = p.settled(proc)
    assert (slot.accepted_conn, slot.requests) == (2, 2)


def test_scoreboard_shows_finishing_while_the_peer_is_slow_to_take(pool, app_dir):
    p = pool()
    proc = p.start('myapp', cwd=app_dir)
    sock = p.connect()
    sock.sendall(begin() + record(FCGI_PARAMS, params('/big')) + record(FCGI_PARAMS)
                 + record(FCGI_STDIN))
    assert wait_for(lambda: p.state(proc) == 'finishing')
    sock.close()                             # and never takes the answer
    slot = p.settled(proc)
    assert (slot.requests, slot.protocol_errors, slot.exceptions) == (1, 0, 0)
    assert p.request('/').body == b'app %d' % proc.pid


def test_without_the_scoreboard_env_no_slot_is_written(pool):
    p = pool()
    proc = p.start(board=False)
    assert pid_of(p.request('/')) == proc.pid
    with pytest.raises(ScoreboardError, match='no slot'):
        p.slot(proc)


def test_unusable_scoreboard_dir_is_one_line_and_the_worker_serves(pool):
    p = pool()
    p.board = str(p.tmp_path / 'missing')
    proc = p.start()
    assert pid_of(p.request('/')) == proc.pid
    lines = stderr_of(proc).splitlines()
    assert len([line for line in lines if 'scoreboard disabled' in line]) == 1
    assert 'missing' in lines[0] and len(lines) == 2     # and the 'serving' line


# -- signals ---------------------------------------------------------------------

@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signal_while_idle_in_accept_exits_0_at_once(pool, signum):
    p = pool()
    proc = p.start()
    pid_of(p.request('/'))
    time.sleep(0.1)      # back in accept()
    began = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(5) == 0
    assert time.monotonic() - began < 1.0
    assert 'stopped: %s' % signum.name in stderr_of(proc)


def test_term_during_a_request_finishes_it_and_loses_no_queued_connection(pool):
    p = pool()
    proc = p.start()
    slow = in_background(p.request, '/?sleep=1')
    assert wait_for(lambda: p.state(proc) == 'running')
    proc.send_signal(signal.SIGTERM)
    queued = in_background(p.request, '/')   # arrives while the worker stops
    assert pid_of(slow.result()) == proc.pid
    assert proc.wait(5) == 0
    assert p.slot(proc).requests == 1         # it did not take the queued one
    successor = p.start()
    assert pid_of(queued.result()) == successor.pid


def test_term_on_an_idle_keep_alive_connection(pool):
    p = pool()
    proc = p.start()
    with FastCGIConnection(p.address, timeout=10) as conn:
        pid_of(conn.request('/'))
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - began < 1.5
    assert p.slot(proc).state == 'idle'


@pytest.mark.parametrize('threads', ['1', '2'])
def test_term_right_after_accept_still_serves_the_connection(pool, threads):
    # nginx connects, the worker accepts, TERM arrives, then the request:
    # the connection is not an idle one, it must be answered.
    p = pool()
    proc = p.start('--threads', threads)
    sock = p.connect()
    assert wait_for(lambda: p.state(proc, 'connections') == 1)    # accepted
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.6)      # longer than the worker's wait slice: it saw the stop
    sock.sendall(begin() + record(FCGI_PARAMS, params()) + record(FCGI_PARAMS)
                 + record(FCGI_STDIN))
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b'\x01\x06') and b'ProcessId: %d' % proc.pid in answer
    assert proc.wait(5) == 0
    assert p.slot(proc).requests == 1


def test_threaded_stop_serves_a_connection_no_pool_thread_took_yet(tmp_path):
    # flup's ThreadPool.shutdown() drops queued jobs; a stop right after a
    # dispatch must still serve that connection.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / 's'))
    listener.listen(1)
    server = worker.ThreadedWorker(worker.demo_app, listener, 2, timeout=5)
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(begin() + record(FCGI_PARAMS, params()) + record(FCGI_PARAMS)
                       + record(FCGI_STDIN))
        assert server._wait_for_thread()
        server._dispatch(worker.WorkerConnection(ours, None, server, None))
        server._drain()
        assert b'ProcessId: %d' % os.getpid() in read_until_closed(theirs)
    finally:
        theirs.close()
        listener.close()


def test_sigkill_loses_only_the_request_in_flight(pool):
    p = pool()
    victim = p.start()
    other = p.start()
    assert wait_for(lambda: all(os.path.exists(slot_path(p.board, 'pool', x.pid))
                                for x in (victim, other)))
    calls = [in_background(p.request, '/?sleep=1') for _ in range(2)]
    assert wait_for(lambda: p.state(victim) == 'running' == p.state(other))
    victim.kill()
    outcomes = []
    for call in calls:
        try:
            outcomes.append(pid_of(call.result()))
        except FastCGIError as exc:
            outcomes.append(str(exc))
    assert other.pid in outcomes and sum(isinstance(o, str) for o in outcomes) == 1
    assert all(pid_of(p.request('/')) == other.pid for _ in range(3))
    assert p.slot(victim).state == 'running'    # left as it was, for the harvest


def test_sigusr1_dumps_the_stacks_and_the_worker_goes_on(pool):
    p = pool()
    proc = p.start()
    slow = in_background(p.request, '/?sleep=0.6')
    assert wait_for(lambda: p.state(proc) == 'running')
    proc.send_signal(signal.SIGUSR1)
    assert pid_of(slow.result()) == proc.pid
    assert pid_of(p.request('/')) == proc.pid
    err = stderr_of(proc)
    assert 'in demo_app' in err and 'Current thread' in err


# -- max requests ----------------------------------------------------------------

def serve_until_exit(p, proc, limit=50):
    served = 0
    while proc.poll() is None and served < limit:
        try:
            pid_of(p.request('/', timeout=2))
        except FastCGIError:
            break
        served += 1
        wait_for(lambda: proc.poll() is not None, 0.05)
    return served


def test_max_requests_exits_0_after_n(pool):
    p = pool()
    proc = p.start('--max-requests', '4')
    assert serve_until_exit(p, proc) == 4
    assert proc.wait(5) == 0
    assert 'stopped: max-requests (4)' in stderr_of(proc)
    assert (p.slot(proc).requests, p.slot(proc).max_requests) == (4, 4)


def test_max_requests_jitter_stays_in_bounds(pool):
    p = pool()
    for _ in range(4):
        proc = p.start('--max-requests', '2', '--max-requests-jitter', '3')
        served = serve_until_exit(p, proc)
        assert proc.wait(5) == 0
        assert 2 <= served <= 5 and p.slot(proc).max_requests == served


# -- boot and load errors -----------------------------------------------------------

@pytest.mark.parametrize('fd0', ['devnull', 'file', 'pipe', 'connected', 'udp'])
def test_fd0_not_a_listening_socket_exits_3_with_one_line(tmp_path, fd0):
    closers = []
    if fd0 == 'devnull':
        stdin = subprocess.DEVNULL
    elif fd0 == 'file':
        stdin = open(tmp_path / 'f', 'w+')
        closers.append(stdin)
    elif fd0 == 'pipe':
        r, w = os.pipe()
        stdin = r
        closers += [os.fdopen(r), os.fdopen(w)]
    else:
        kind = socket.SOCK_DGRAM if fd0 == 'udp' else socket.SOCK_STREAM
        a, b = socket.socketpair(socket.AF_UNIX, kind)
        stdin = a.fileno()
        closers += [a, b]
    try:
        result = subprocess.run(WORKER, stdin=stdin, capture_output=True, text=True,
                                timeout=20)
    finally:
        for c in closers:
            c.close()
    assert result.returncode == worker.WORKER_BOOT_ERROR
    assert result.stderr.count('\n') == 1 and 'fd 0' in result.stderr
    assert 'fcgi-program' in result.stderr


@pytest.mark.parametrize('spec, reason', [
    ('no_such_module_xyz:app', "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    ('badmod', 'ZeroDivisionError: division by zero'),
    ('badsyntax', 'SyntaxError'),
    ('os:no_such_attr', 'AttributeError'),
    ('os:sep', 'is not callable'),
])
def test_bad_app_exits_4_with_one_line(pool, tmp_path, spec, reason):
    (tmp_path / 'badmod.py').write_text('1 / 0\n')
    (tmp_path / 'badsyntax.py').write_text('def (:\n  pass\n')
    p = pool()
    proc = p.start(spec, cwd=str(tmp_path))
    assert proc.wait(20) == worker.APP_LOAD_ERROR
    err = stderr_of(proc)
    assert err.count('\n') == 1 and reason in err and spec in err


def test_bad_options_are_refused(pool):
    p = pool()
    for args in (['--threads', '0'], ['--max-requests', '-1'], ['--timeout', '0']):
        assert p.start(*args).wait(20) == 2


# -- bad input ---------------------------------------------------------------------

def record(kind, content=b'', request_id=1):
    return struct.pack('!BBHHBx', 1, kind, request_id, len(content), 0) + content


def begin():
    return record(FCGI_BEGIN_REQUEST, struct.pack(FCGI_BeginRequestBody, FCGI_RESPONDER, 0))


def params(uri='/'):
    return b''.join(encode_pair(k.encode(), v if isinstance(v, bytes) else str(v).encode())
                    for k, v in cgi_params(uri).items())


def read_until_closed(sock, timeout=5):
    """All the worker sends until it closes; raises socket.timeout if it never does."""
    sock.settimeout(timeout)
    data = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data.append(chunk)
    except ConnectionResetError:
        pass
    return b''.join(data)


def test_get_values_tells_the_web_server_one_connection_at_a_time(pool):
    p = pool()
    p.start()
    sock = p.connect()
    sock.sendall(record(FCGI_GET_VALUES, encode_pair(b'FCGI_MAX_CONNS', b''), 0))
    sock.settimeout(5)
    answer = sock.recv(65536)
    sock.close()
    assert answer[1] == FCGI_GET_VALUES_RESULT and b'FCGI_MAX_CONNS1' in answer


def test_bad_input_never_hangs_the_worker_nor_skews_its_counters(pool):
    p = pool()
    proc = p.start('--timeout', '0.5')
    bad = {
        'http to the fastcgi port': b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
        'bad version': b'\x09' + record(FCGI_BEGIN_REQUEST)[1:],
        'short begin body': record(FCGI_BEGIN_REQUEST, b'\x00'),
        'oversized params': begin() + record(FCGI_PARAMS, b'x' * 65000) * 20,
    }
    for name, data in bad.items():
        sock = p.connect()
        try:
            sock.sendall(data)
        except OSError:
            pass       # the worker may have hung up already
        read_until_closed(sock)
        sock.close()
        assert pid_of(p.request('/')) == proc.pid, name
    began = time.monotonic()
    half = p.connect()
    half.sendall(begin() + record(FCGI_PARAMS, params()))
    half.shutdown(socket.SHUT_WR)           # half-closed in the middle of a request
    silent = p.connect()
    silent.sendall(begin()[:5])             # then nothing: the read timeout ends it
    assert pid_of(p.request('/')) == proc.pid
    assert time.monotonic() - began < 3
    half.close()
    silent.close()
    empty = p.connect()                     # a port check: connects, says nothing
    empty.close()
    assert pid_of(p.request('/')) == proc.pid
    assert wait_for(lambda: p.state(proc) == 'idle' and p.slot(proc).accepted_conn == 13)
    slot = p.slot(proc)
    assert (slot.requests, slot.protocol_errors, slot.active, slot.state) == (6, 6, 0, 'idle')
    assert stderr_of(proc).count('dropped connection') == 6


# -- in-process pieces ---------------------------------------------------------------

class FakeStartResponse:
    def __call__(self, status, headers, exc_info=None):
        self.status, self.headers = status, headers


def test_demo_app_directly():
    sr = FakeStartResponse()
    assert worker.demo_app({'QUERY_STRING': 'a=1'}, sr) == [b'ProcessId: %d\n' % os.getpid()]
    assert sr.status == '200 OK'
    assert worker.demo_app({'QUERY_STRING': 'sleep=x'}, sr)
    assert sr.status.startswith('400')


def test_listening_socket_detects_the_family(tmp_path):
    for family, address in ((socket.AF_UNIX, str(tmp_path / 's')), (socket.AF_INET, ('127.0.0.1', 0)),
                            (socket.AF_INET6, ('::1', 0))):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        with sock:
            sock.bind(address)
            sock.listen(1)
            found = worker.listening_socket(os.dup(sock.fileno()))
            assert found.family == family
            found.close()
    with socket.socket() as unbound:
        with pytest.raises(worker.BootError, match='not a listening'):
            worker.listening_socket(unbound.fileno())
        os.fstat(unbound.fileno())    # not closed by the failed probe


def test_load_app_messages():
    assert worker.load_app('supervisor_fcgi_ext.worker.server:demo_app') is worker.demo_app
    with pytest.raises(ValueError, match="cannot load app 'nope_xyz'"):
        worker.load_app('nope_xyz')


def test_help_names_the_exit_codes():
    result = subprocess.run(WORKER + ['--help'], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert 'Exit codes' in result.stdout and 'autorestart' in result.stdout
