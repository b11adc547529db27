"""Fixtures for the integration layer: real flup workers, supervisord, nginx.

Every fixture stops what it started at teardown, even when the test failed.
A missing nginx skips locally but fails in CI (CI=true): integration tests
must never be silently skipped there.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys

import pytest

from supervisor_fcgi_ext.lab.harness import HarnessError, Nginx, Supervisor, find_nginx
from supervisor_fcgi_ext.lab.processes import alive, session_processes
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
from supervisor_fcgi_ext.worker.slotwriter import SlotWriter

pytest_plugins = ['pytester']   # test_harness runs the nginx fixtures in a sub-pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# A bare flup worker serving fd 0 (see flupapp.py), usable as a pool command.
FLUPAPP_ARGV = [sys.executable, os.path.join(TESTS_DIR, 'flupapp.py')]
FLUPAPP_COMMAND = shlex.join(FLUPAPP_ARGV)


def in_ci():
    return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


@pytest.fixture
def flupapp_command():
    return FLUPAPP_COMMAND


@pytest.fixture
def requires_nginx():
    """Path of nginx; skip (locally) or fail (in CI) when it is missing."""
    try:
        return find_nginx()
    except HarnessError as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def flup_factory(tmp_path):
    """make(kind='tcp'|'unix', workers=1) -> (address, listening socket).

    Like supervisord's fcgi-program without supervisord: the test owns the
    listening socket and ``workers`` flup processes serve it as fd 0.
    """
    procs, socks = [], []

    def make(kind='tcp', workers=1, backlog=16):
        if kind == 'tcp':
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(('127.0.0.1', 0))
            address = 'tcp://127.0.0.1:%d' % sock.getsockname()[1]
        else:
            path = str(tmp_path / ('flup%d.sock' % len(socks)))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            address = 'unix://' + path
        sock.listen(backlog)
        socks.append(sock)
        for _ in range(workers):
            procs.append(subprocess.Popen(
                FLUPAPP_ARGV, stdin=sock.fileno(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return address, sock

    yield make
    for proc in procs:
        # Killed, not terminated: a flup worker blocked in accept() ignores
        # SIGTERM (see DESIGN.md 4).
        proc.kill()
    for proc in procs:
        proc.wait(10)
    for sock in socks:
        sock.close()


@pytest.fixture
def supervisor_factory():
    """make(pools, **Supervisor kwargs) -> a started Supervisor."""
    started = []

    def make(pools, wait_running=True, timeout=20, **kwargs):
        sup = Supervisor(pools, **kwargs)
        sup.start(wait_running=wait_running, timeout=timeout)
        started.append(sup)
        return sup

    yield make
    _stop_all(started)


@pytest.fixture
def nginx_factory(requires_nginx):
    """make(upstream, **Nginx kwargs) -> a started Nginx."""
    started = []

    def make(upstream, **kwargs):
        server = Nginx(upstream, nginx=requires_nginx, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    _stop_all(started)


def _stop_all(servers):
    errors = []
    for server in reversed(servers):
        try:
            server.stop()
        except Exception as exc:   # keep stopping the others
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def pool_dir(tmp_path):
    """A pool's scoreboard directory, as the plugin makes it."""
    return ensure_pool_dir(str(tmp_path / 'board'), 'pool')


@pytest.fixture
def pool_status(tmp_path):
    """make(requests=(20, 10), busy={}, stopped=0, sampled_connections=None,
    unreadable=False, socket_open=True) -> PoolMonitor's status of pool 'app'.

    Worker i has served requests[i] requests, written to a real slot file
    by the real SlotWriter (fake pids 100, 101, ...); busy {i: (method,
    uri)} leaves one of them in flight.  ``stopped`` adds stopped processes;
    ``sampled_connections=N`` adds this very process as a worker without a
    slot, holding N connections of the pool's real listening socket;
    ``unreadable`` one whose slot file is garbage.  So
    what reads the dict (fcgi_status, the experiment) sees every change of
    its schema.
    """
    board = str(tmp_path / 'status-board')
    directory = ensure_pool_dir(board, 'app')
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    opened = [listener]

    def make(requests=(20, 10), busy=None, stopped=0, sampled_connections=None,
             unreadable=False, socket_open=True):
        busy = busy or {}
        processes = []
        for i, count in enumerate(requests):
            writer = SlotWriter(directory, pid=100 + i)
            writer.ready()
            for _ in range(count):
                writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/'},
                                       accepted=True)
                writer.request_finished(status=200, closing=True)
            if i in busy:
                method, uri = busy[i]
                writer.request_started({'REQUEST_METHOD': method, 'REQUEST_URI': uri},
                                       accepted=True)
            writer.close()
            processes.append(ProcessView('app_%02d' % i, 100 + i, 'RUNNING', 0))
        if sampled_connections is not None:
            for _ in range(sampled_connections):
                opened.append(socket.create_connection(listener.getsockname()))
                opened.append(listener.accept()[0])
            processes.append(ProcessView('app_%02d' % len(processes), os.getpid(),
                                         'RUNNING', 0))
        if unreadable:   # a slot file the reader refuses: a warning
            with open(os.path.join(directory, '99.slot'), 'wb') as f:
                f.write(b'not a slot')
            processes.append(ProcessView('app_%02d' % len(processes), 99, 'RUNNING', 0))
        processes += [ProcessView('app_%02d' % (len(processes) + i), 0, 'STOPPED', 0)
                      for i in range(stopped)]
        view = PoolView('app', 'tcp://127.0.0.1:%d' % listener.getsockname()[1], 16,
                        listener if socket_open else None, processes, False)
        monitor = PoolMonitor('app', board)
        monitor.sample(view)
        return monitor.status(view)

    yield make
    for sock in opened:
        sock.close()


@pytest.fixture
def assert_all_gone():
    """check(sid, pids, workdir): nothing of a stopped server is left."""
    def check(sid, pids, workdir):
        assert session_processes(sid) == []
        assert [p for p in pids if alive(p)] == []
        assert not os.path.exists(workdir)
    return check
