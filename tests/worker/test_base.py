"""The accept loop as supervisord runs it: real worker processes, real
signals, max-requests, who may connect, and TCP_NODELAY through nginx."""
from __future__ import annotations

import http.client
import os
import signal
import statistics
import time

import pytest

from supervisor_fcgi_ext.common.scoreboard import slot_path
from supervisor_fcgi_ext.lab.fcgiclient import FastCGIError
from supervisor_fcgi_ext.lab.harness import PoolSpec
from workerpool import (
    in_background, pid_of, read_until_closed, stderr_of, wait_for, whole_request,
)



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
    sock.sendall(whole_request())
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b'\x01\x06') and b'ProcessId: %d' % proc.pid in answer
    assert proc.wait(5) == 0
    assert p.slot(proc).requests == 1


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
