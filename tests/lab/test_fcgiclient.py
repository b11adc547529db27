"""fcgiclient against real flup workers (tests/flupapp.py) and raw sockets."""
from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time

import pytest

from supervisor_fcgi_ext.common.fastcgi import (
    END_REQUEST, PARAMS, STDERR, STDOUT, RecordReader, decode_pairs, encode_record, end_request,
)
from supervisor_fcgi_ext.lab.fcgiclient import (
    FastCGIConnection, FastCGIError, cgi_params, fcgi_request, parse_address,
)
from supervisor_fcgi_ext.lab.harness import free_port


@pytest.mark.parametrize('address, expected', [
    ('tcp://127.0.0.1:9001', (socket.AF_INET, ('127.0.0.1', 9001))),
    ('127.0.0.1:9001', (socket.AF_INET, ('127.0.0.1', 9001))),
    (('127.0.0.1', 9001), (socket.AF_INET, ('127.0.0.1', 9001))),
    ('tcp://[::1]:9001', (socket.AF_INET6, ('::1', 9001))),
    ('unix:///tmp/x.sock', (socket.AF_UNIX, '/tmp/x.sock')),
    ('unix:/tmp/x.sock', (socket.AF_UNIX, '/tmp/x.sock')),
    ('/tmp/x.sock', (socket.AF_UNIX, '/tmp/x.sock')),
])
def test_parse_address_accepts_supervisor_and_nginx_forms(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize('address', ['localhost', 'tcp://127.0.0.1:http', ':80'])
def test_parse_address_rejects_garbage_with_one_line(address):
    with pytest.raises(FastCGIError) as info:
        parse_address(address)
    assert '\n' not in str(info.value) and repr(address) in str(info.value)


def test_cgi_params_split_uri_and_allow_overrides():
    params = cgi_params('/a%20b/c?x=1&y=2', 'POST', b'abc',
                        {'HTTP_X_FOO': 'bar', 'REMOTE_PORT': None})
    assert params['PATH_INFO'] == b'/a b/c'
    assert params['QUERY_STRING'] == 'x=1&y=2'
    assert params['REQUEST_URI'] == '/a%20b/c?x=1&y=2'
    assert params['CONTENT_LENGTH'] == '3'
    assert params['HTTP_X_FOO'] == 'bar'
    assert 'REMOTE_PORT' not in params


@pytest.mark.parametrize('kind', ['tcp', 'unix'])
def test_get_returns_status_headers_and_body(flup_factory, kind):
    address, _ = flup_factory(kind)
    response = fcgi_request(address, '/some/path?q=1')
    assert response.status == 200
    assert response.header('content-type') == 'application/json'
    data = json.loads(response.body)
    assert (data['method'], data['path'], data['query']) == ('GET', '/some/path', 'q=1')
    assert data['script_name'] == ''


def test_post_body_reaches_the_app_in_several_records(flup_factory):
    address, _ = flup_factory()
    body = bytes(range(256)) * 1000   # 256 kB: more than one STDIN record
    response = fcgi_request(address, '/echo', 'POST', body=body)
    assert response.status == 200 and response.body == body


def test_status_repeated_headers_and_stderr(flup_factory):
    address, _ = flup_factory()
    assert fcgi_request(address, '/status/404').status == 404
    headers = fcgi_request(address, '/headers').headers
    assert [v for k, v in headers if k == 'X-Test'] == ['one', 'two']
    assert fcgi_request(address, '/stderr').stderr == b'oops from the app\n'


@pytest.mark.parametrize('kind', ['tcp', 'unix'])
def test_connection_keeps_one_socket_for_several_requests(flup_factory, kind):
    address, _ = flup_factory(kind)
    with FastCGIConnection(address) as conn:
        first = conn.request('/')
        sock = conn.sock
        for i in range(5):
            assert conn.request('/echo', 'POST', body=b'%d' % i).body == b'%d' % i
        assert conn.sock is sock and first.status == 200


def test_keep_alive_requests_do_not_stall_on_delayed_acks(flup_factory):
    # Without TCP_QUICKACK each request waits ~40 ms for flup's last segment.
    address, _ = flup_factory()
    with FastCGIConnection(address) as conn:
        conn.request('/')
        start = time.monotonic()
        for _ in range(10):
            conn.request('/')
        assert time.monotonic() - start < 0.3


@contextlib.contextmanager
def one_peer(handle):
    """A loopback peer that accepts one connection and runs handle(conn) on
    it in a thread; yields the address to send the request to."""
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)

        def serve():
            conn, _ = listener.accept()
            with conn:
                handle(conn)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()
        thread.join(5)


def answer(*records):
    """A peer handler that reads the request and answers with ``records``
    ((type, content) pairs for request id 1)."""
    def handle(conn):
        conn.recv(65536)
        conn.sendall(b''.join(encode_record(rtype, 1, content) for rtype, content in records))
        conn.recv(1)   # until the client closes
    return handle


@pytest.mark.parametrize('records, message', [
    ([(END_REQUEST, end_request(0, 2))],
     'refused the request: FCGI_OVERLOADED'),
    ([(STDOUT, b'Status: 200 OK\r\nno end of headers'),
      (END_REQUEST, end_request())],
     'malformed response from .*: no end of headers'),
    ([(STDOUT, b'Status: abc\r\n\r\n'),
      (END_REQUEST, end_request())],
     "malformed Status header from .*: 'abc'"),
])
def test_protocol_errors_are_one_line(records, message):
    with one_peer(answer(*records)) as address:
        with pytest.raises(FastCGIError, match=message) as info:
            fcgi_request(address, '/', timeout=5)
    assert '\n' not in str(info.value)


def test_location_without_status_is_a_redirect_and_app_status_kept():
    with one_peer(answer((STDERR, b'warn'),
                         (STDOUT, b'Location: /there\n\nbody'),
                         (END_REQUEST, end_request(3)))) \
            as address:
        response = fcgi_request(address, '/', timeout=5)
    assert (response.status, response.header('location')) == (302, '/there')
    assert (response.body, response.stderr, response.app_status) == (b'body', b'warn', 3)


def test_keep_conn_decides_whether_the_server_closes(flup_factory):
    address, _ = flup_factory()
    family, sockaddr = parse_address(address)
    with socket.create_connection(sockaddr, 5) as sock:
        fcgi_request(address, '/', keep_conn=True, sock=sock)
        assert fcgi_request(address, '/', keep_conn=False, sock=sock).status == 200
        with pytest.raises(FastCGIError, match='closed the connection'):
            fcgi_request(address, '/', sock=sock, timeout=5)


def test_unanswered_request_times_out_with_one_line():
    # Nobody accepts: connect succeeds through the backlog, no reply comes.
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(4)
        start = time.monotonic()
        with pytest.raises(FastCGIError) as info:
            fcgi_request(listener.getsockname(), '/', timeout=0.3)
        assert time.monotonic() - start < 2
    message = str(info.value)
    assert 'within 0.3s' in message and 'timed out' in message and '\n' not in message


def test_timeout_bounds_the_whole_request_not_each_read():
    # A server that drips one byte per 0.1 s must not keep us waiting forever.
    def drip(conn):
        for _ in range(30):
            try:
                conn.sendall(b'\x01')
            except OSError:
                return
            time.sleep(0.1)
    with one_peer(drip) as address:
        start = time.monotonic()
        with pytest.raises(FastCGIError, match='timed out'):
            fcgi_request(address, '/', timeout=0.5)
        assert time.monotonic() - start < 1.5


@pytest.mark.parametrize('how, message', [
    ('fin', 'closed the connection before FCGI_END_REQUEST'),
    ('reset', 'lost before FCGI_END_REQUEST: Connection reset by peer'),
])
def test_peer_closing_early_is_an_error(how, message):
    def close_early(conn):
        conn.recv(8)   # the client is connected and sending
        if how == 'fin':
            conn.shutdown(socket.SHUT_WR)
            conn.recv(65536)
        else:   # linger 0: close() sends a RST
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack('ii', 1, 0))
    with one_peer(close_early) as address:
        with pytest.raises(FastCGIError, match=message):
            fcgi_request(address, '/', timeout=5)


@pytest.mark.parametrize('address, reason', [
    ('tcp://127.0.0.1:%d' % free_port(), 'Connection refused'),
    ('unix:///nonexistent/dir/x.sock', 'No such file or directory'),
])
def test_connection_refused_is_one_line(address, reason):
    with pytest.raises(FastCGIError) as info:
        fcgi_request(address, '/', timeout=2)
    assert str(info.value) == 'cannot connect to %s: %s' % (address, reason)


def test_connection_reconnects_after_an_error(flup_factory):
    address, _ = flup_factory()
    conn = FastCGIConnection(address, timeout=5)
    try:
        conn.request('/')
        conn.sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(FastCGIError):
            conn.request('/')
        assert conn.sock is None
        assert conn.request('/').status == 200
    finally:
        conn.close()


def test_params_are_sent_as_latin1_bytes_and_other_text_is_refused():
    # the bytes flup decodes back to the same str: one encoding both ways
    seen = {}

    def capture(conn):
        reader = RecordReader()
        while 'params' not in seen:
            reader.feed(conn.recv(65536))
            rec = reader.next_record()
            while rec is not None:
                if rec.type == PARAMS and rec.content:
                    seen['params'] = dict(decode_pairs(rec.content))
                rec = reader.next_record()
        conn.sendall(encode_record(STDOUT, 1, b'\r\n\r\n') + encode_record(END_REQUEST, 1,
                                                                           end_request()))
    with one_peer(capture) as address:
        fcgi_request(address, '/caf\xe9', params={'HTTP_X_NAME': 'Jos\xe9', 'RAW': b'\xff'},
                     timeout=5)
    assert seen['params'][b'REQUEST_URI'] == b'/caf\xe9'
    assert (seen['params'][b'HTTP_X_NAME'], seen['params'][b'RAW']) == (b'Jos\xe9', b'\xff')
    with pytest.raises(FastCGIError, match="cannot send the request to .*: '/\u20ac' is not "
                                           "latin-1") as info:
        fcgi_request(('127.0.0.1', free_port()), '/\u20ac', timeout=2)
    assert '\n' not in str(info.value)
