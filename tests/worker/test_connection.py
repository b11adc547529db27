"""A connection over real sockets: keep-alive, the states shown while the
peer is slow, management records, and bad input that must never hang the
worker (the same cases in memory: tests/common/test_fastcgi.py)."""
from __future__ import annotations

import signal
import socket
import time

import pytest

from supervisor_fcgi_ext.common.fastcgi import (
    ABORT_REQUEST, BEGIN_REQUEST, CANT_MPX_CONN, END_REQUEST, GET_VALUES, GET_VALUES_RESULT,
    KEEP_CONN, PARAMS, REQUEST_COMPLETE, STDIN, STDOUT, RecordReader, begin_request,
    encode_pair, encode_params, encode_stream, parse_end_request,
)
from supervisor_fcgi_ext.lab.fcgiclient import FastCGIConnection, cgi_params
from workerpool import (
    CODECS, begin, params, pid_of, read_until_closed, record, stderr_of, wait_for, whole_request,
)


@pytest.fixture(params=CODECS)
def codec(request):
    return request.param


def test_keep_alive_connection_counts_one_connection(pool):
    p = pool()
    proc = p.start()
    with FastCGIConnection(p.address, timeout=10) as conn:
        for _ in range(5):
            assert pid_of(conn.request('/')) == proc.pid
    slot = p.settled(proc)
    assert (slot.accepted_conn, slot.requests, slot.protocol_errors) == (1, 5, 0)


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
    sock.sendall(record(PARAMS, params('/?sleep=0.5')) + record(PARAMS)
                 + record(STDIN))
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


def test_scoreboard_shows_finishing_while_the_peer_is_slow_to_take(pool, app_dir):
    p = pool()
    proc = p.start('myapp', cwd=app_dir)
    sock = p.connect()
    sock.sendall(whole_request('/big'))
    assert wait_for(lambda: p.state(proc) == 'finishing')
    sock.close()                             # and never takes the answer
    slot = p.settled(proc)
    assert (slot.requests, slot.protocol_errors, slot.exceptions) == (1, 0, 0)
    assert p.request('/').body == b'app %d' % proc.pid


def test_get_values_tells_the_web_server_one_connection_at_a_time(pool):
    p = pool()
    p.start()
    sock = p.connect()
    sock.sendall(record(GET_VALUES, encode_pair(b'FCGI_MAX_CONNS', b''), 0))
    sock.settimeout(5)
    answer = sock.recv(65536)
    sock.close()
    assert answer[1] == GET_VALUES_RESULT and b'FCGI_MAX_CONNS1' in answer


def test_bad_input_never_hangs_the_worker_nor_skews_its_counters(pool):
    p = pool()
    proc = p.start('--timeout', '0.5')
    bad = {
        'http to the fastcgi port': b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
        'bad version': b'\x09' + record(BEGIN_REQUEST)[1:],
        'short begin body': record(BEGIN_REQUEST, b'\x00'),
        'oversized params': begin() + record(PARAMS, b'x' * 65000) * 20,
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
    half.sendall(begin() + record(PARAMS, params()))
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


def answers(sock, count):
    """The request ids of the next ``count`` END_REQUESTs and their protocol
    statuses, with the STDOUT each request got before it."""
    reader, got, out = RecordReader(), [], {}
    while len(got) < count:
        rec = reader.next_record()
        if rec is None:
            data = sock.recv(65536)
            assert data, 'the worker closed after %d answers' % len(got)
            reader.feed(data)
        elif rec.type == STDOUT:
            out[rec.request_id] = out.get(rec.request_id, b'') + rec.content
        elif rec.type == END_REQUEST:
            got.append((rec.request_id, parse_end_request(rec.content)[1],
                        out.pop(rec.request_id, b'')))
    return got


def test_requests_in_pieces_pipelined_multiplexed_and_aborted(pool):
    # the C codec takes a whole request at once and leaves every other
    # arrangement to the record-by-record path: both give these answers
    p = pool()
    proc = p.start()
    keep = record(BEGIN_REQUEST, begin_request(flags=KEEP_CONN))
    one = keep + record(PARAMS, params('/one')) + record(PARAMS) + record(STDIN)
    sock = p.connect()
    for at in range(0, len(one), 7):          # in pieces, each sent alone
        sock.sendall(one[at:at + 7])
        time.sleep(0.002)
    (rid, status, out), = answers(sock, 1)
    assert (rid, status) == (1, REQUEST_COMPLETE) and out.startswith(b'Status: 200')
    sock.sendall(one * 3)                     # pipelined: three in one send
    assert [(rid, status) for rid, status, _ in answers(sock, 3)] == \
        [(1, REQUEST_COMPLETE)] * 3
    # a second request while the first waits for its params: refused, not mixed
    sock.sendall(keep + record(BEGIN_REQUEST, begin_request(), request_id=2)
                 + record(ABORT_REQUEST, request_id=3) + record(PARAMS, params('/one'))
                 + record(PARAMS) + record(STDIN, b'abc') + record(STDIN))
    assert [(rid, status) for rid, status, _ in answers(sock, 2)] == \
        [(2, CANT_MPX_CONN), (1, REQUEST_COMPLETE)]
    # an abort of the request itself: it was answered whole all the same (flup)
    sock.sendall(keep + record(PARAMS, params('/one')) + record(PARAMS)
                 + record(ABORT_REQUEST) + record(STDIN))
    (rid, status, out), = answers(sock, 1)
    assert (rid, status) == (1, REQUEST_COMPLETE) and b'ProcessId: %d' % proc.pid in out
    sock.close()
    slot = p.settled(proc)
    assert (slot.accepted_conn, slot.requests, slot.protocol_errors) == (1, 6, 0)


@pytest.mark.parametrize('size', [0, 3, 65528, 300000])
def test_a_body_sent_with_its_params_reaches_the_app_whole(pool, app_dir, size):
    # nginx sends a small body in the same write as the params: the part of
    # it that came whole is taken with them, the rest record by record
    p = pool()
    proc = p.start('myapp', cwd=app_dir)
    body = (bytes(range(256)) * (size // 256 + 1))[:size]
    sock = p.connect()
    sock.sendall(begin() + record(PARAMS, encode_params(cgi_params('/echo', 'POST', body)))
                 + record(PARAMS) + b''.join(encode_stream(STDIN, 1, body, end=True)))
    (rid, status, out), = answers(sock, 1)
    assert (rid, status) == (1, REQUEST_COMPLETE)
    assert out.split(b'\r\n\r\n', 1)[1] == body
    sock.close()
    assert p.settled(proc).requests == 1
