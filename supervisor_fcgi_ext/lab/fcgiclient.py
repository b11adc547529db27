"""A small FastCGI client: what nginx's fastcgi_pass does, in Python.

flup's own client (flup.client.fcgi_app) is broken on Python 3, so tests,
benchmarks and the experiment use this one. Records are framed by
common/fastcgi.py (the worker's codec); this module only adds the
request/response exchange over a socket, CGI params like nginx's
fastcgi_params, one overall deadline per request, and errors that read as
one line.  Param names and values are bytes, or latin-1 text (to_bytes).
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from supervisor_fcgi_ext.common.fastcgi import (
    BEGIN_REQUEST, END_REQUEST, KEEP_CONN, PARAMS, PROTOCOL_STATUS_NAMES,
    REQUEST_COMPLETE, STDERR, STDIN, STDOUT, ProtocolError, RecordReader, begin_request,
    encode_params, encode_record, encode_stream, parse_end_request,
)
from supervisor_fcgi_ext.common.scoreboard import os_reason

__all__ = ['FastCGIError', 'Response', 'FastCGIConnection', 'fcgi_request',
           'parse_address', 'format_address', 'connect', 'cgi_params', 'encode_request']

# flup writes a record as several small sends and keeps the connection open
# with FCGI_KEEP_CONN, so its last segment waits (Nagle) for our delayed ACK:
# 40 ms per keep-alive request unless we ACK at once. Linux only.
_TCP_QUICKACK = getattr(socket, 'TCP_QUICKACK', 0)


class FastCGIError(Exception):
    """Any failure to get a complete response; the message is one line."""


@dataclass
class Response:
    status: int
    headers: list = field(default_factory=list)   # [(name, value)] as sent
    body: bytes = b''
    stderr: bytes = b''
    app_status: int = 0

    def header(self, name, default=None):
        """First value of header ``name`` (case-insensitive)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default


def parse_address(address):
    """Return (family, sockaddr) for the address forms supervisor and nginx use.

    Accepts 'tcp://host:port', 'host:port', '[::1]:port', (host, port),
    'unix:///path', 'unix:/path' and '/path'.
    """
    if isinstance(address, tuple):
        host, port = address
    else:
        text = str(address)
        if text.startswith('unix:'):
            path = text[len('unix:'):]
            path = path[2:] if path.startswith('//') else path
            return socket.AF_UNIX, path
        if text.startswith('/'):
            return socket.AF_UNIX, text
        if text.startswith('tcp://'):
            text = text[len('tcp://'):]
        host, sep, port = text.rpartition(':')
        if not sep or not host:
            raise FastCGIError('bad FastCGI address %r: want tcp://HOST:PORT '
                               'or unix:///PATH' % (address,))
    host = host.strip('[]')
    try:
        port = int(port)
    except ValueError:
        raise FastCGIError('bad port in FastCGI address %r' % (address,))
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    return family, (host, port)


def format_address(address):
    """A URL for messages: tcp://host:port or unix:///path."""
    family, sockaddr = parse_address(address)
    if family == socket.AF_UNIX:
        return 'unix://' + sockaddr
    host = '[%s]' % sockaddr[0] if family == socket.AF_INET6 else sockaddr[0]
    return 'tcp://%s:%d' % (host, sockaddr[1])


def connect(address, timeout=10.0):
    """Connected socket to a FastCGI server; FastCGIError when that fails."""
    family, sockaddr = parse_address(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except OSError as exc:
        sock.close()
        raise FastCGIError('cannot connect to %s: %s'
                           % (format_address(address), os_reason(exc)))
    if family != socket.AF_UNIX:
        # Requests are written in one send, but keep small keep-alive
        # exchanges free of Nagle/delayed-ACK stalls all the same.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def cgi_params(uri='/', method='GET', body=b'', params=None):
    """The params nginx's fastcgi_params would send for ``uri``.

    SCRIPT_NAME is empty and PATH_INFO the decoded path, as WSGI workers
    expect (the harness's nginx config sends the same). A value of None in
    ``params`` removes that key.
    """
    path, _, query = uri.partition('?')
    result = {
        'GATEWAY_INTERFACE': 'CGI/1.1',
        'SERVER_SOFTWARE': 'supervisor-fcgi-ext',
        'SERVER_PROTOCOL': 'HTTP/1.1',
        'REQUEST_SCHEME': 'http',
        'REQUEST_METHOD': method,
        'REQUEST_URI': uri,
        'DOCUMENT_URI': path,
        'SCRIPT_NAME': '',
        'PATH_INFO': unquote_to_bytes(path),
        'QUERY_STRING': query,
        'CONTENT_TYPE': 'application/octet-stream' if body else '',
        'CONTENT_LENGTH': str(len(body)) if body else '',
        'SERVER_NAME': 'localhost',
        'SERVER_ADDR': '127.0.0.1',
        'SERVER_PORT': '80',
        'REMOTE_ADDR': '127.0.0.1',
        'REMOTE_PORT': '0',
        'HTTP_HOST': 'localhost',
    }
    for key, value in (params or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def encode_request(request_id, params, body=b'', keep_conn=False):
    """The records of one responder request, as nginx sends them: begin,
    params, their end, the body, its end."""
    out = [encode_record(BEGIN_REQUEST, request_id,
                         begin_request(flags=KEEP_CONN if keep_conn else 0))]
    out += encode_stream(PARAMS, request_id, encode_params(params), end=True)
    out += encode_stream(STDIN, request_id, body, end=True)
    return b''.join(out)


class _Reader:
    """The records a socket brings, each by a deadline, as one-line errors."""

    def __init__(self, sock):
        self.sock = sock
        self.records = RecordReader()
        self.quickack = sock.family != socket.AF_UNIX and _TCP_QUICKACK

    def next_record(self, deadline, where, timeout):
        while True:
            try:
                rec = self.records.next_record()
            except ProtocolError as exc:
                raise FastCGIError('malformed response from %s: %s' % (where, exc))
            if rec is not None:
                return rec
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout('timed out')
                self.sock.settimeout(remaining)
                if self.quickack:
                    self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                data = self.sock.recv(65536)
            except socket.timeout:
                raise FastCGIError('no complete response from %s within %gs: '
                                   'timed out' % (where, timeout))
            except OSError as exc:
                raise FastCGIError('connection to %s lost before FCGI_END_REQUEST: '
                                   '%s' % (where, os_reason(exc)))
            if not data:
                raise FastCGIError('%s closed the connection before FCGI_END_REQUEST'
                                   % where)
            self.records.feed(data)


def _request_bytes(address, request_id, uri, method, params, body, keep_conn):
    """encode_request of cgi_params, or FastCGIError before any connection."""
    try:
        return encode_request(request_id, cgi_params(uri, method, body, params), body,
                              keep_conn)
    except (TypeError, ValueError) as exc:
        raise FastCGIError('cannot send the request to %s: %s'
                           % (format_address(address), exc))


def _exchange(sock, reader, address, request_id, data, timeout, deadline=None):
    """Send one request's bytes on ``sock`` and read its response by
    ``deadline`` (default: ``timeout`` from now)."""
    deadline = deadline or time.monotonic() + timeout
    where = format_address(address)
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(data)
    except OSError as exc:
        raise FastCGIError('sending request to %s failed: %s' % (where, os_reason(exc)))
    stdout, stderr = [], []
    while True:
        rec = reader.next_record(deadline, where, timeout)
        if rec.request_id != request_id:
            continue
        if rec.type == STDOUT:
            stdout.append(rec.content)
        elif rec.type == STDERR:
            stderr.append(rec.content)
        elif rec.type == END_REQUEST:
            try:
                app_status, protocol_status = parse_end_request(rec.content)
            except ProtocolError as exc:
                raise FastCGIError('malformed response from %s: %s' % (where, exc))
            break
    if protocol_status != REQUEST_COMPLETE:
        raise FastCGIError('%s refused the request: %s' % (
            where, PROTOCOL_STATUS_NAMES.get(protocol_status, protocol_status)))
    response = _parse_cgi(b''.join(stdout), where)
    response.stderr = b''.join(stderr)
    response.app_status = app_status
    return response


def _parse_cgi(data, where):
    """Split a CGI response into status, headers and body."""
    ends = [(data.find(sep), sep) for sep in (b'\r\n\r\n', b'\n\n')]
    ends = [(pos, sep) for pos, sep in ends if pos >= 0]
    if not ends:
        raise FastCGIError('malformed response from %s: no end of headers in %r'
                           % (where, data[:80]))
    pos, sep = min(ends)
    status, headers = 200, []
    for line in data[:pos].decode('latin-1').splitlines():
        name, _, value = line.partition(':')
        name, value = name.strip(), value.strip()
        if name.lower() == 'status':
            try:
                status = int(value.split()[0])
            except (ValueError, IndexError):
                raise FastCGIError('malformed Status header from %s: %r'
                                   % (where, value))
        else:
            headers.append((name, value))
            if name.lower() == 'location' and status == 200:
                status = 302
    return Response(status, headers, data[pos + len(sep):])


def fcgi_request(address, uri='/', method='GET', params=None, body=b'',
                 timeout=10.0, keep_conn=False, sock=None):
    """Send one FastCGI request to ``address`` and return its Response.

    ``timeout`` bounds the whole request. With ``sock`` (an already
    connected socket) the request goes over it and the socket stays open,
    so ``keep_conn=True`` lets the caller reuse it; otherwise a connection
    is opened and closed here.
    """
    data = _request_bytes(address, 1, uri, method, params, body, keep_conn)
    if sock is not None:
        return _exchange(sock, _Reader(sock), address, 1, data, timeout)
    deadline = time.monotonic() + timeout
    own = connect(address, timeout)
    try:
        return _exchange(own, _Reader(own), address, 1, data, timeout, deadline)
    finally:
        own.close()


class FastCGIConnection:
    """Several requests over one connection (FCGI_KEEP_CONN), as nginx's
    ``fastcgi_keep_conn on`` does.

    After an error the connection is closed; the next request reconnects.
    """

    def __init__(self, address, timeout=10.0):
        self.address = address
        self.timeout = timeout
        self.sock = None
        self._reader = None
        self._request_id = 0

    def request(self, uri='/', method='GET', params=None, body=b'',
                timeout=None):
        timeout = self.timeout if timeout is None else timeout
        # flup and nginx ignore the id's value; counting helps in captures.
        request_id = self._request_id % 0xffff + 1
        data = _request_bytes(self.address, request_id, uri, method, params, body, True)
        if self.sock is None:
            self.sock = connect(self.address, timeout)
            self._reader = _Reader(self.sock)
        self._request_id = request_id
        try:
            return _exchange(self.sock, self._reader, self.address, request_id, data,
                             timeout)
        except FastCGIError:
            self.close()
            raise

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
