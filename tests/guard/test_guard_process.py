"""The real fcgi-guard process, its pipes driven as supervisord drives them
(READY, header, payload, RESULT), against a real socket server that accepts
and never answers, and with every kind of malformed header."""
import os
import select
import socket
import subprocess
import threading
import time

import pytest

from supervisor_fcgi_ext.guard import protocol
from supervisor_fcgi_ext.lab.harness import BIN_DIR

from guardfakes import tick

READY, OK = b'READY\n', b'RESULT 2\nOK'


class SilentServer:
    """Accepts connections on ``address`` and never answers on them."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.held = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.held:
            conn.close()


def silent_server(kind, tmp_path):
    """(server, its SUPERVISOR_SERVER_URL) for kind 'unix' or 'http'."""
    if kind == 'unix':
        path = str(tmp_path / 'silent.sock')
        return SilentServer(socket.AF_UNIX, path), 'unix://' + path
    server = SilentServer(socket.AF_INET, ('127.0.0.1', 0))
    return server, 'http://127.0.0.1:%d' % server.sock.getsockname()[1]


@pytest.fixture(params=['unix', 'http'])
def silent_url(request, tmp_path):
    """SUPERVISOR_SERVER_URL of a server that accepts and never answers."""
    server, url = silent_server(request.param, tmp_path)
    yield url
    server.close()


@pytest.fixture
def silent_unix_url(tmp_path):
    server, url = silent_server('unix', tmp_path)
    yield url
    server.close()


class Guard:
    """fcgi-guard ARGS in a process of its own; stdin and stdout are ours."""

    def __init__(self, tmp_path, url, *args):
        self.log_path = str(tmp_path / 'guard.log')
        env = dict(os.environ, SUPERVISOR_SERVER_URL=url)
        with open(self.log_path, 'w') as log:
            self.proc = subprocess.Popen([os.path.join(BIN_DIR, 'fcgi-guard')] + list(args),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env)

    def expect(self, data, timeout):
        """Read ``data`` from the guard's stdout within ``timeout``; seconds it took."""
        start, got = time.monotonic(), b''
        while len(got) < len(data):
            left = start + timeout - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError('no %r from fcgi-guard within %g s, got %r; log:\n%s'
                                     % (data, timeout, got, self.log()))
            chunk = os.read(self.proc.stdout.fileno(), len(data) - len(got))
            assert chunk, 'fcgi-guard closed stdout; log:\n%s' % self.log()
            got += chunk
        assert got == data, (got, self.log())
        return time.monotonic() - start

    def send(self, text):
        self.proc.stdin.write(text.encode('utf-8'))
        self.proc.stdin.flush()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def log_lines(self):
        return self.log().splitlines()

    def close(self):
        """Close stdin as supervisord does: the guard ends, status 0."""
        self.proc.stdin.close()
        try:
            return self.proc.wait(10)
        finally:
            self.proc.kill()
            self.proc.stdout.close()


@pytest.fixture
def start_guard(tmp_path):
    guards = []

    def start(url, *args):
        guard = Guard(tmp_path, url, *args)
        guards.append(guard)
        guard.expect(READY, 20)
        return guard
    yield start
    for guard in guards:
        if guard.proc.poll() is None:
            guard.proc.kill()
            guard.proc.wait()


def crash_event(pool='app'):
    """A PROCESS_STATE_EXITED event of an unexpected exit, as supervisord sends it."""
    payload = ('processname:%s_00 groupname:%s from_state:RUNNING expected:0 pid:1'
               % (pool, pool))
    return 'ver:3.0 eventname:PROCESS_STATE_EXITED len:%d\n%s' % (len(payload), payload)


CRASH_ALARM = ('ALARM pool app: crash loop: 1 unexpected exits within 60 s, '
               'last app_00 EXITED from RUNNING')


def test_a_server_that_never_answers_costs_one_timeout_per_event(silent_url,
                                                                 start_guard):
    guard = start_guard(silent_url, '--pool', 'app', '--request-timeout', '5',
                        '--crash-threshold', '1/60', '--rpc-timeout', '1')
    for serial in (1, 2):
        guard.send(tick(serial))
        took = guard.expect(OK, 1 + 5)
        guard.expect(READY, 2)
        assert took >= 0.9
        print('answered after %.2f s' % took)
    lines = guard.log_lines()
    assert 'guarding app' in lines[0]
    assert len(lines) == 3, lines
    for line in lines[1:]:
        assert 'fcgi-guard: TICK_5 failed: TimeoutError: timed out' in line
    guard.send(crash_event())            # needs no call: handled at once
    guard.expect(OK, 5)
    assert CRASH_ALARM in guard.log_lines()[-1]
    assert guard.close() == 0


MALFORMED = [
    ('no colon', 'ver3.0 server:supervisor len:0\n', 'is not name:value'),
    ('empty line', '\n', 'no len'),
    ('no len', 'ver:3.0 eventname:TICK_5\n', 'no len'),
    ('len not a number', 'ver:3.0 eventname:TICK_5 len:abc\nwhen:1', 'is not a count'),
    ('negative len', 'ver:3.0 eventname:TICK_5 len:-5\nwhen:1', 'is not a count'),
    ('huge len', 'ver:3.0 eventname:TICK_5 len:99999999999999999\nwhen:1', 'is over the'),
    ('len past the payload', 'ver:3.0 eventname:TICK_5 len:100\nwhen:1',
     'payload incomplete after 2 s: 6 of 100'),
    ('header without its newline', 'ver:3.0 eventname:TICK_5 len:6',
     'header line incomplete after 2 s'),
]


def test_each_malformed_header_is_answered_logged_and_the_next_event_handled(
        silent_unix_url, start_guard):
    guard = start_guard(silent_unix_url, '--pool', 'app', '--crash-threshold', '1/60')
    for number, (what, text, why) in enumerate(MALFORMED, 1):
        guard.send(text)
        took = guard.expect(OK, protocol.REST_WAIT + 3)
        guard.expect(READY, 2)
        lines = guard.log_lines()
        assert len(lines) == 1 + number, (what, lines)
        assert 'bad event from supervisord, acknowledged: ' in lines[-1], what
        assert why in lines[-1], (what, lines[-1])
        print('%s: answered after %.2f s' % (what, took))
    guard.send(crash_event())
    guard.expect(OK, 5)
    guard.expect(READY, 2)
    assert CRASH_ALARM in guard.log_lines()[-1]
    assert guard.close() == 0
