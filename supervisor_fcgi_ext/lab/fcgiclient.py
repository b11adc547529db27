"""A small FastCGI client: what nginx's fastcgi_pass does, in Python.

flup's own client (flup.client.fcgi_app) is broken on Python 3, so tests,
benchmarks and the experiment use this one. The record format is flup's
(``flup.server.fcgi_base.Record`` / ``encode_pair``); this module only adds
the request/response exchange, CGI params like nginx's fastcgi_params, one
overall deadline per request, and errors that read as one line.
"""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST, FCGI_BeginRequestBody, FCGI_END_REQUEST,
    FCGI_EndRequestBody, FCGI_KEEP_CONN, FCGI_PARAMS, FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER, FCGI_STDERR, FCGI_STDIN, FCGI_STDOUT, Record, encode_pair,
)

__all__ = ['FastCGIError', 'Response', 'FastCGIConnection', 'fcgi_request',
           'parse_address', 'format_address', 'connect', 'cgi_params']

# A record's content length is a u16.
_MAX_CONTENT = 65535
# flup writes a record as several small sends and keeps the connection open
# with FCGI_KEEP_CONN, so its last segment waits (Nagle) for our delayed ACK:
# 40 ms per keep-alive request unless we ACK at once. Linux only.
_TCP_QUICKACK = getattr(socket, 'TCP_QUICKACK', 0)
_PROTOCOL_STATUS = {1: 'FCGI_CANT_MPX_CONN', 2: 'FCGI_OVERLOADED',
                    3: 'FCGI_UNKNOWN_ROLE'}


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
                           % (format_address(address), _reason(exc)))
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


class _Writer:
    """Socket stand-in that collects what Record.write sends, for one sendall."""

    def __init__(self):
        self.chunks = []

    def fileno(self):
        return -1

    def send(self, data):
        self.chunks.append(bytes(data))
        return len(data)

    def record(self, rtype, request_id, content=b''):
        """Append ``content`` as records of ``rtype`` (empty → one empty record)."""
        for start in range(0, max(len(content), 1), _MAX_CONTENT):
            rec = Record(rtype, request_id)
            rec.contentData = content[start:start + _MAX_CONTENT]
            rec.contentLength = len(rec.contentData)
            rec.write(self)


class _Reader:
    """Socket stand-in for Record.read: buffered, bounded by a deadline.

    Record.read turns every exception into EOFError, so the real cause
    (timeout, reset) is kept in ``error`` for the message.
    """

    def __init__(self, sock):
        self.sock = sock
        self.deadline = None
        self.buffer = b''
        self.error = None
        self.quickack = sock.family != socket.AF_UNIX and _TCP_QUICKACK

    def fileno(self):
        return self.sock.fileno()

    def recv(self, size):
        if not self.buffer:
            try:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout('timed out')
                self.sock.settimeout(remaining)
                if self.quickack:
                    self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                self.buffer = self.sock.recv(max(size, 65536))
            except OSError as exc:
                self.error = exc
                raise
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _reason(exc):
    if isinstance(exc, socket.timeout):
        return 'timed out'
    return exc.strerror or str(exc) or type(exc).__name__


def _exchange(sock, reader, address, request_id, params, body, keep_conn,
              timeout, deadline=None):
    """Send one request on ``sock`` and read its response by ``deadline``
    (default: ``timeout`` from now)."""
    reader.deadline = deadline or time.monotonic() + timeout
    reader.error = None
    out = _Writer()
    flags = FCGI_KEEP_CONN if keep_conn else 0
    out.record(FCGI_BEGIN_REQUEST, request_id,
               struct.pack(FCGI_BeginRequestBody, FCGI_RESPONDER, flags))
    out.record(FCGI_PARAMS, request_id,
               b''.join(encode_pair(_bytes(k), _bytes(v))
                        for k, v in params.items()))
    out.record(FCGI_PARAMS, request_id)
    if body:
        out.record(FCGI_STDIN, request_id, body)
    out.record(FCGI_STDIN, request_id)
    where = format_address(address)
    try:
        sock.settimeout(max(reader.deadline - time.monotonic(), 0.001))
        sock.sendall(b''.join(out.chunks))
    except OSError as exc:
        raise FastCGIError('sending request to %s failed: %s'
                           % (where, _reason(exc)))
    stdout, stderr = [], []
    while True:
        rec = Record()
        try:
            rec.read(reader)
        except EOFError:
            if isinstance(reader.error, socket.timeout):
                raise FastCGIError('no complete response from %s within %gs: '
                                   'timed out' % (where, timeout))
            if reader.error is not None:
                raise FastCGIError('connection to %s lost before FCGI_END_REQUEST: '
                                   '%s' % (where, _reason(reader.error)))
            raise FastCGIError('%s closed the connection before FCGI_END_REQUEST'
                               % where)
        if rec.requestId != request_id:
            continue
        if rec.type == FCGI_STDOUT:
            stdout.append(rec.contentData)
        elif rec.type == FCGI_STDERR:
            stderr.append(rec.contentData)
        elif rec.type == FCGI_END_REQUEST:
            app_status, protocol_status = struct.unpack(
                FCGI_EndRequestBody, rec.contentData)
            break
    if protocol_status != FCGI_REQUEST_COMPLETE:
        raise FastCGIError('%s refused the request: %s' % (
            where, _PROTOCOL_STATUS.get(protocol_status, protocol_status)))
    response = _parse_cgi(b''.join(stdout), where)
    response.stderr = b''.join(stderr)
    response.app_status = app_status
    return response


def _bytes(value):
    return value if isinstance(value, bytes) else str(value).encode('utf-8')


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
    params = cgi_params(uri, method, body, params)
    if sock is not None:
        return _exchange(sock, _Reader(sock), address, 1, params, body,
                         keep_conn, timeout)
    deadline = time.monotonic() + timeout
    own = connect(address, timeout)
    try:
        return _exchange(own, _Reader(own), address, 1, params, body,
                         keep_conn, timeout, deadline)
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
        if self.sock is None:
            self.sock = connect(self.address, timeout)
            self._reader = _Reader(self.sock)
        # flup and nginx ignore the id's value; counting helps in captures.
        self._request_id = self._request_id % 0xffff + 1
        try:
            return _exchange(self.sock, self._reader, self.address,
                             self._request_id,
                             cgi_params(uri, method, body, params), body,
                             True, timeout)
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
