"""fcgi-worker's command line: options, the demo app, loading the app, fd 0
and the exit codes of a worker that cannot start."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from supervisor_fcgi_ext.worker import cli
from workerpool import WORKER, stderr_of



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
    assert result.returncode == cli.WORKER_BOOT_ERROR
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
    assert proc.wait(20) == cli.APP_LOAD_ERROR
    err = stderr_of(proc)
    assert err.count('\n') == 1 and reason in err and spec in err


def test_bad_options_are_refused(pool):
    p = pool()
    for args in (['--threads', '0'], ['--max-requests', '-1'], ['--timeout', '0']):
        assert p.start(*args).wait(20) == 2


class FakeStartResponse:
    def __call__(self, status, headers, exc_info=None):
        self.status, self.headers = status, headers


def test_demo_app_directly():
    sr = FakeStartResponse()
    assert cli.demo_app({'QUERY_STRING': 'a=1'}, sr) == [b'ProcessId: %d\n' % os.getpid()]
    assert sr.status == '200 OK'
    assert cli.demo_app({'QUERY_STRING': 'sleep=x'}, sr)
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
            found = cli.listening_socket(os.dup(sock.fileno()))
            assert found.family == family
            found.close()
    with socket.socket() as unbound:
        with pytest.raises(cli.BootError, match='not a listening'):
            cli.listening_socket(unbound.fileno())
        os.fstat(unbound.fileno())    # not closed by the failed probe


def test_load_app_messages():
    assert cli.load_app('supervisor_fcgi_ext.worker.cli:demo_app') is cli.demo_app
    with pytest.raises(ValueError, match="cannot load app 'nope_xyz'"):
        cli.load_app('nope_xyz')


def test_help_names_the_exit_codes():
    result = subprocess.run(WORKER + ['--help'], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert 'Exit codes' in result.stdout and 'autorestart' in result.stdout


@pytest.mark.parametrize('option, value', [
    ('--threads', '0'), ('--threads', '100000'), ('--max-requests', '-1'),
    ('--max-requests', '99999999999999999999999'), ('--max-requests-jitter', '-2'),
    ('--timeout', '0'), ('--timeout', 'nan'), ('--timeout', 'inf'), ('--threads', 'x')])
def test_bad_option_values_are_a_usage_line_and_status_2(option, value):
    result = subprocess.run(WORKER + [option, value], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith('usage: fcgi-worker')
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith('fcgi-worker: error: ') and option in last
