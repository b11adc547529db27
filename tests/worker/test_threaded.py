"""--threads: connections served at once, a stop that loses none, and the
scoreboard counts of a threaded worker."""
from __future__ import annotations

import os
import socket
import time

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import FastCGIConnection
from supervisor_fcgi_ext.worker import cli
from supervisor_fcgi_ext.worker.threaded import ThreadedWorker
from workerpool import (
    WRITER_OPTIONS, in_background, pid_of, read_until_closed, wait_for, whole_request,
    writer_named_in,
)



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


def test_threaded_stop_serves_a_connection_no_pool_thread_took_yet(tmp_path):
    # flup's ThreadPool.shutdown() drops queued jobs; a stop right after a
    # dispatch must still serve that connection.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / 's'))
    listener.listen(1)
    server = ThreadedWorker(cli.demo_app, listener, 2, timeout=5)
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(whole_request())
        assert server._wait_for_thread()
        server._dispatch(ours.detach(), None)
        server._drain()
        assert b'ProcessId: %d' % os.getpid() in read_until_closed(theirs)
    finally:
        theirs.close()
        listener.close()


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


@pytest.mark.parametrize('options', WRITER_OPTIONS)
def test_threaded_worker_counts_every_request_exactly(pool, options):
    # kept-alive and one-shot connections at once, on every thread: the
    # locked writer (C where built) loses no update to a race
    p = pool()
    proc = p.start('--threads', '4', *options)

    def kept(n):
        with FastCGIConnection(p.address, timeout=10) as conn:
            return [pid_of(conn.request('/?sleep=0.001')) for _ in range(n)]

    def one_shot(n):
        return [pid_of(p.request('/')) for _ in range(n)]
    calls = [in_background(kept, 30) for _ in range(3)] + [in_background(one_shot, 20)
                                                           for _ in range(2)]
    pids = [pid for call in calls for pid in call.result(30)]
    assert len(pids) == 130 and set(pids) == {proc.pid}
    assert wait_for(lambda: p.state(proc, 'connections') == 0)
    slot = p.settled(proc)
    assert (slot.requests, slot.accepted_conn, slot.active, slot.protocol_errors) == \
        (130, 43, 0, 0)
    assert slot.threads == 4 and writer_named_in(proc, options)
