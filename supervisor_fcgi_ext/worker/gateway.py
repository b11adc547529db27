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

__all__ = ['WorkerRequest', 'WorkerOutputStream', 'handle', 'wsgi_environ', 'cgi_response',
           'NOT_CGI_HEADERS']

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

    @functools.cached_property
    def data(self):
        """FCGI_DATA, which only a filter's web server sends: made when used."""
        return self._input_class(self._conn)

    def run(self):
        server, conn, board = self.server, self._conn, self.server.scoreboard
        if board is not None:
            # timed from the app's call: a slow client's time shows as 'reading'
            board.request_started(self.params, not conn.counted)
            conn.counted = True
        conn.phase, conn.shown = 'running', None
        failed = False
        try:
            protocol_status, app_status = server.handler(self)
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


def handle(server, req):
    """flup's WSGI gateway, leaner: a list response is sent whole at the end
    of the request, an iterator's chunks as they come.  The worker's
    ``handler`` method."""
    if req.role not in server.roles:
        return UNKNOWN_ROLE, 0
    environ = wsgi_environ(req.params, server.wsgi_base)
    environ['wsgi.input'] = req.stdin
    environ['wsgi.errors'] = req.stderr
    server._sanitizeEnv(environ)
    response = []      # [status, headers] once start_response was called
    sent = []          # non-empty once the headers are out
    out = req.stdout

    def send_headers(body, extra=b'', last=False):
        (out.write_last if last else out.write)(cgi_response(response[0], response[1],
                                                             extra, body))
        sent.append(True)

    def write(data):
        if not response:
            raise AssertionError('write() before start_response()')
        if sent:
            out.write(to_bytes(data))
        else:
            send_headers(to_bytes(data))
        req._conn.flush()

    def start_response(status, headers, exc_info=None):
        if exc_info:
            try:
                if sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif response:
            raise AssertionError('start_response() called twice')
        status = to_bytes(status)
        req.status = int(status[:3])
        try:        # text, as PEP 3333 has it; else to_bytes says what is wrong
            encoded = [(k.encode('latin-1'), v.encode('latin-1')) for k, v in headers]
        except (AttributeError, UnicodeError):
            encoded = [(to_bytes(k), to_bytes(v)) for k, v in headers]
        response[:] = [status, encoded]
        return write

    result = server.application(environ, start_response)
    try:
        if isinstance(result, (list, tuple)):
            req._conn.phase = 'finishing'     # the app is done
            body = b''.join(map(to_bytes, result))
            if not response:
                raise AssertionError('app returned before start_response()')
            if sent:
                out.write(body)
            else:
                has_length = b'content-length' in [k.lower() for k, _ in response[1]]
                send_headers(body, b'' if has_length else
                             b'Content-Length: %d\r\n' % len(body), last=True)
        else:
            for data in result:
                if data:
                    write(data)
            if not sent:
                write(b'')
    finally:
        if hasattr(result, 'close'):
            result.close()
    return REQUEST_COMPLETE, 0
