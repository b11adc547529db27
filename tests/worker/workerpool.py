"""What the worker's tests share: a pool of real fcgi-worker processes on a
listening socket as fd 0 (as supervisord runs them), the FastCGI they are
sent, framed by the worker's own codec, and small waits."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from supervisor_fcgi_ext.common import fastcgi
from supervisor_fcgi_ext.common.fastcgi import (
    BEGIN_REQUEST, PARAMS, STDIN, begin_request, encode_params, encode_record,
)
from supervisor_fcgi_ext.common.scoreboard import ENV_VAR, ScoreboardError, slot_path
from supervisor_fcgi_ext.lab.fcgiclient import cgi_params, fcgi_request
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir, read_slot
from supervisor_fcgi_ext.worker import slotwriter

WORKER = [sys.executable, '-m', 'supervisor_fcgi_ext.worker']
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

    def __init__(self, tmp_path, kind='unix', env=None):
        self.tmp_path = tmp_path
        self.env = env or {}       # for every worker started
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
        env = dict(os.environ, SUPERVISOR_GROUP_NAME='pool', **dict(self.env, **(env or {})))
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


# Each worker writes its slot with the C writer where it is built; both
# writers are run through the real worker.
WRITER_OPTIONS = [pytest.param([], id='default-writer'),
                  pytest.param(['--python-scoreboard'], id='python-writer')]


# The FastCGI codec: C where it is built, else Python; a test module that
# overrides the ``codec`` fixture with CODECS runs through both.
CODECS = [pytest.param('C', id='c-codec', marks=pytest.mark.skipif(
              fastcgi.CODEC != 'C', reason='the C codec is not built')),
          pytest.param('Python', id='python-codec')]
CODEC_ENV = {'C': {}, 'Python': {'FCGI_PURE_PYTHON': '1'}, 'default': {}}


def writer_named_in(proc, options):
    kind = 'C' if slotwriter.CSlotWriter and not options else 'Python'
    return '(%s writer)' % kind in stderr_of(proc)


def record(kind, content=b'', request_id=1):
    return encode_record(kind, request_id, content)


def begin():
    return record(BEGIN_REQUEST, begin_request())


def params(uri='/'):
    return encode_params(cgi_params(uri))


def whole_request(uri='/'):
    """A GET's records, as nginx sends them."""
    return begin() + record(PARAMS, params(uri)) + record(PARAMS) + record(STDIN)


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
