"""A request's WSGI side: the environ (PEP 3333 to the letter), the app's
answer as FastCGI output, and the request's scoreboard updates."""
from __future__ import annotations

import functools
import sys
import traceback

from flup.server import fcgi_base

from supervisor_fcgi_ext.common.fastcgi import (
    REQUEST_COMPLETE, STDERR, STDOUT, UNKNOWN_ROLE, to_bytes,
)
from supervisor_fcgi_ext.worker.connection import PeerGone

__all__ = ['WorkerRequest', 'WorkerOutputStream', 'Answer', 'handle', 'wsgi_environ',
           'cgi_response', 'encode_status', 'encode_headers', 'NOT_CGI_HEADERS']

# nginx's stock fastcgi_params passes every request header as HTTP_*, these
# two as well: PEP 3333 has them as CONTENT_TYPE and CONTENT_LENGTH only
# (wsgiref.validate refuses an environ with them).
NOT_CGI_HEADERS = ('HTTP_CONTENT_TYPE', 'HTTP_CONTENT_LENGTH')


class WorkerOutputStream(fcgi_base.OutputStream):
    """Records go to the connection's output buffer, not one send() each."""

    def __init__(self, conn, req, type, buffered=False):
        super().__init__(conn, req, type, buffered)
        self.bytes = 0

    def _write(self, data):
        self.bytes += len(data)
        self._conn.write_stream(self._type, self._req.requestId, data)

    def write_last(self, data):
        """``data`` (bytes, not empty) and the end of the stream, framed at
        once: what write() then close() send."""
        self.dataWritten = True
        self.bytes += len(data)
        self._conn.write_stream(self._type, self._req.requestId, data, end=True)
        self.closed = True

    def close(self):
        """The end of the stream, if anything was written to it."""
        if not self.closed and self.dataWritten:
            self.flush()
            self._conn.write_stream(self._type, self._req.requestId, b'', end=True)
            self.closed = True


class WorkerRequest(fcgi_base.Request):
    """A request that reports to the scoreboard: running while the app runs,
    idle after, with its duration, CPU share and peak memory."""

    def __init__(self, conn, inputStreamClass, timeout):
        # flup's Request.__init__, less the two output streams it would make
        # only for these to replace them
        self._conn, self._timeout, self.server, self.params = conn, timeout, conn.server, {}
        self.stdin, self._input_class = inputStreamClass(conn), inputStreamClass
        self.stdout = WorkerOutputStream(conn, self, STDOUT)
        self.stderr = WorkerOutputStream(conn, self, STDERR, buffered=True)
        self.status = 0
        self.param_bytes = 0

    @property
    def connection(self):
        """The WorkerConnection this request came on."""
        return self._conn

    @functools.cached_property
    def data(self):
        """FCGI_DATA, which only a filter's web server sends: made when used."""
        return self._input_class(self._conn)

    def run(self):
        self.begin()
        self.conclude(self.server.handler, self)

    def begin(self):
        """The app is about to be called: the scoreboard shows it running."""
        conn, board = self._conn, self.server.scoreboard
        if board is not None:
            # timed from the app's call: a slow client's time shows as 'reading'
            board.request_started(self.params, not conn.counted)
            conn.counted = True
        conn.phase, conn.shown = 'running', None

    def conclude(self, step, *args):
        """``step(*args)`` (the handler: the app's call and its answer), then
        the end of the request, whatever happened, and its accounting."""
        server, conn, board = self.server, self._conn, self.server.scoreboard
        failed = False
        try:
            protocol_status, app_status = step(*args)
        except PeerGone:
            protocol_status, app_status = REQUEST_COMPLETE, 0
        except Exception:
            failed = True
            self.status = 500
            text = traceback.format_exc()
            sys.stderr.write(text)
            self.stderr.write(text)
            if not self.stdout.dataWritten:
                server.error(self)
            protocol_status, app_status = REQUEST_COMPLETE, 0
        conn.phase = 'finishing'
        try:
            self._flush()
            self._end(app_status, protocol_status)
        except PeerGone:
            pass
        finally:
            conn.phase = conn.shown = None
            conn.linger = conn.linger or not self.stdin._eof
            conn.kept = True
            server.request_done()
            if board is not None:
                # closes right after (no lingering): uncounted in this update;
                # else this update shows the read of the next request
                conn.released = conn.lost or not (conn.keep_going or conn.linger)
                board.request_finished(self.status, failed, self.stdout.bytes,
                                       conn.released)
                if not conn.released:
                    conn.shown = 'reading'


def wsgi_environ(params, base):
    """The WSGI environ of a request with these FastCGI ``params`` (made
    into it, in place): ``base``'s wsgi.* keys, no HTTP_CONTENT_*, and
    SCRIPT_NAME '/' (stock fastcgi_params for '/') as PEP 3333 has it: ''
    with PATH_INFO '/'."""
    params.update(base)
    for name in NOT_CGI_HEADERS:
        params.pop(name, None)
    if params.get('SCRIPT_NAME') == '/':
        params['SCRIPT_NAME'] = ''
        params['PATH_INFO'] = '/' + params.get('PATH_INFO', '').lstrip('/')
    if params.get('HTTPS', 'off') in ('on', '1'):
        params['wsgi.url_scheme'] = 'https'
    return params


def cgi_response(status, headers, extra=b'', body=b''):
    """The CGI answer's bytes: its Status and headers (bytes), ``extra``
    header lines, the blank line, and ``body``."""
    lines = [b'Status: ', status, b'\r\n']
    for name, value in headers:
        lines += (name, b': ', value, b'\r\n')
    lines += (extra, b'\r\n', body)
    return b''.join(lines)


def encode_status(status):
    """(the status line as bytes, its code): start_response's reading of it."""
    status = to_bytes(status)
    return status, int(status[:3])


def encode_headers(headers):
    """The response headers as (bytes, bytes) pairs: text, as PEP 3333 has
    it; else to_bytes says what is wrong."""
    try:
        return [(k.encode('latin-1'), v.encode('latin-1')) for k, v in headers]
    except (AttributeError, UnicodeError):
        return [(to_bytes(k), to_bytes(v)) for k, v in headers]


class Answer:
    """flup's WSGI gateway, leaner: start_response, write() and the app's
    result for one request.  A list response is sent whole at the end of
    the request, an iterator's chunks as they come.  ``response`` is
    [status, headers] once start_response was called; ``sent`` true once
    the headers are out."""
    __slots__ = ('req', 'out', 'response', 'sent')

    def __init__(self, req):
        self.req, self.out, self.response, self.sent = req, req.stdout, [], False

    def _send_headers(self, body, extra=b'', last=False):
        out = self.out
        (out.write_last if last else out.write)(cgi_response(self.response[0],
                                                             self.response[1], extra, body))
        self.sent = True

    def write(self, data):
        if not self.response:
            raise AssertionError('write() before start_response()')
        if self.sent:
            self.out.write(to_bytes(data))
        else:
            self._send_headers(to_bytes(data))
        self.req._conn.flush()

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.response:
            raise AssertionError('start_response() called twice')
        status, self.req.status = encode_status(status)
        self.response[:] = [status, encode_headers(headers)]
        return self.write

    def finish(self, result):
        """Send the app's ``result``, and close it; (protocol status, app status)."""
        try:
            if isinstance(result, (list, tuple)):
                self.req._conn.phase = 'finishing'     # the app is done
                body = b''.join(map(to_bytes, result))
                if not self.response:
                    raise AssertionError('app returned before start_response()')
                if self.sent:
                    self.out.write(body)
                else:
                    has_length = b'content-length' in [k.lower() for k, _ in self.response[1]]
                    self._send_headers(body, b'' if has_length else
                                       b'Content-Length: %d\r\n' % len(body), last=True)
            else:
                for data in result:
                    if data:
                        self.write(data)
                if not self.sent:
                    self.write(b'')
        finally:
            if hasattr(result, 'close'):
                result.close()
        return REQUEST_COMPLETE, 0

    def conclude(self, result, exc):
        """finish(result), or raise ``exc``, what the app raised: for a
        request the fast path (fastpath.py) hands over with the app called."""
        if exc is not None:
            raise exc
        return self.finish(result)


def handle(server, req):
    """The WSGI call of a request: the worker's ``handler`` method."""
    if req.role not in server.roles:
        return UNKNOWN_ROLE, 0
    environ = wsgi_environ(req.params, server.wsgi_base)
    environ['wsgi.input'] = req.stdin
    environ['wsgi.errors'] = req.stderr
    server._sanitizeEnv(environ)
    answer = Answer(req)
    return answer.finish(server.application(environ, answer.start_response))
