"""fcgi-worker: a FastCGI worker for supervisord's [fcgi-program:x], on flup.

usage: fcgi-worker [--threads N] [--max-requests N] [--max-requests-jitter J]
                   [--timeout SECONDS] [module:callable]

Serves the WSGI app ``module:callable`` (``module`` alone means
``module:application``; the current directory is importable) on the listening
socket supervisord passes as fd 0, TCP or unix.  Without an app it serves a
demo that answers ``ProcessId: <pid>`` and sleeps ``?sleep=SECONDS`` first.

    [fcgi-program:app]
    socket = unix:///run/app.sock
    command = fcgi-worker myproject.wsgi:application --max-requests 1000
    numprocs = 6
    process_name = %(program_name)s_%(process_num)02d
    autorestart = true      ; --max-requests and SIGHUP exit 0 to be respawned

One request at a time by default: idle workers wait in a blocking accept(),
which the kernel serves first-in first-out, so a pool spreads its connections
evenly.  ``--threads N`` serves N connections at once (flup's thread pool);
only accepts while a thread is free.

Signals: TERM, INT and HUP finish the requests in flight, then exit 0 (also at
once when idle).  USR1 writes every thread's stack to stderr and goes on.
When supervisord's fcgi plugin runs, every request is counted in this worker's
scoreboard slot (supervisor_fcgi_ext.scoreboard).

FCGI_WEB_SERVER_ADDRS (as in flup): the comma-separated addresses of the web
servers allowed to connect; TCP pools only.

--timeout bounds every wait for the web server on a connection: a request
that stops arriving, an answer nobody takes, and an idle kept-alive connection
(nginx's fastcgi_keep_conn), which holds a single-threaded worker until then.

Exit codes: 0 stopped by a signal or after --max-requests; 3 fd 0 is not a
listening socket (not started as an fcgi-program); 4 the app cannot be loaded.
A recycled worker exits 0, as a clean stop: supervisor's default
autorestart=unexpected would leave it down, so pools set autorestart=true
(then SIGHUP restarts one worker gracefully, too).  A dedicated exit code
would be restarted by default, but logged as "not expected" at every recycle
and counted as a crash by anything that watches exit codes.
"""
from __future__ import annotations

import argparse
import errno
import faulthandler
import importlib
import itertools
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from urllib.parse import parse_qs

from flup.server import fcgi, fcgi_base, fcgi_single

from supervisor_fcgi_ext.worker.slotwriter import SlotWriter

__all__ = ['main', 'demo_app', 'load_app', 'listening_socket', 'BootError',
           'SingleWorker', 'ThreadedWorker', 'WorkerConnection', 'WorkerRequest',
           'EXIT_OK', 'WORKER_BOOT_ERROR', 'APP_LOAD_ERROR']

EXIT_OK = 0
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DEFAULT_TIMEOUT = 30.0
MAX_DEMO_SLEEP = 60.0
# A request's params beyond this are an attack or a bug, not nginx.
MAX_PARAMS_BYTES = 1 << 20
# Record content is at most 65535 bytes; a multiple of 8 needs no padding.
_MAX_CONTENT = 65528
# Buffered output is sent when it reaches this, else at the end of the request.
_FLUSH_AT = 256 * 1024
# Waits are cut in slices to notice a stop request on an idle connection.
_WAIT_SLICE = 0.5
# After answering with request input left unread, read it (up to this long)
# before closing: closing with unread data resets the connection.
_LINGER = 2.0

_HEADER = struct.Struct(fcgi_base.FCGI_Header)
_PAD = bytes(8)


class BootError(Exception):
    """fd 0 cannot be served: exit WORKER_BOOT_ERROR with this one line."""


class ProtocolError(Exception):
    """The peer broke the FastCGI protocol: drop the connection."""


class _Closed(Exception):
    """The connection ended between requests: nothing went wrong."""


class _PeerGone(Exception):
    """The web server went away while we answered: nobody to answer."""


def _log(message):
    sys.stderr.write('fcgi-worker[%d]: %s\n' % (os.getpid(), message))
    sys.stderr.flush()


# -- the app ------------------------------------------------------------------

def demo_app(environ, start_response):
    """?sleep=SECONDS sleeps (capped at MAX_DEMO_SLEEP), then answers the pid."""
    query = environ.get('QUERY_STRING')
    if query:
        values = parse_qs(query, keep_blank_values=True).get('sleep')
        if values:
            try:
                seconds = float(values[0])
                if not 0 <= seconds < float('inf'):
                    raise ValueError
            except ValueError:
                start_response('400 Bad Request', [('Content-Type', 'text/plain')])
                return [b'sleep must be a number of seconds >= 0\n']
            time.sleep(min(seconds, MAX_DEMO_SLEEP))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ProcessId: %d\n' % os.getpid()]


def load_app(spec):
    """The callable named by ``module:callable``; ValueError with one line if not."""
    module_name, _, attr = spec.partition(':')
    attr = attr or 'application'
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split('.'):
            obj = getattr(obj, part)
    except BaseException as exc:   # anything an import can raise, SystemExit too
        reason = str(exc).strip().splitlines()
        raise ValueError('cannot load app %r: %s%s' % (
            spec, type(exc).__name__, ': ' + reason[0] if reason else ''))
    if not callable(obj):
        raise ValueError('cannot load app %r: %r is not callable' % (spec, obj))
    return obj


# -- fd 0 ---------------------------------------------------------------------

def listening_socket(fd=0):
    """The listening stream socket on ``fd``, of its real family (flup assumes
    AF_INET); BootError when fd is anything else."""
    hint = ('fcgi-worker serves the listening socket on fd 0: run it as a '
            'supervisord [fcgi-program:x]')
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BootError('fd %d is not a socket (%s); %s'
                        % (fd, errno.errorcode.get(exc.errno, exc), hint))
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise BootError('fd %d is a socket but not a listening stream socket; %s'
                        % (fd, hint))
    return sock


def describe(sock):
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return 'unix:' + (name if isinstance(name, str) else repr(name))
    host, port = sock.getsockname()[:2]
    return 'tcp://%s:%d' % ('[%s]' % host if ':' in host else host, port)


# -- flup, subclassed -----------------------------------------------------------

class WorkerOutputStream(fcgi_base.OutputStream):
    """Records go to the connection's output buffer, not one send() each."""

    def __init__(self, conn, req, type, buffered=False):
        super().__init__(conn, req, type, buffered)
        self.bytes = 0

    def _write(self, data):
        self.bytes += len(data)
        self._conn.write_stream(self._type, self._req.requestId, data)


class WorkerRequest(fcgi_base.Request):
    """A request that reports to the scoreboard: running while the app runs,
    idle after, with its duration, CPU share and peak memory."""

    def __init__(self, conn, inputStreamClass, timeout):
        super().__init__(conn, inputStreamClass, timeout)
        self.stdout = WorkerOutputStream(conn, self, fcgi_base.FCGI_STDOUT)
        self.stderr = WorkerOutputStream(conn, self, fcgi_base.FCGI_STDERR,
                                         buffered=True)
        self.status = 0
        self.param_bytes = 0

    def run(self):
        server, conn, board = self.server, self._conn, self.server.scoreboard
        if board is not None:
            # timed from the app's call: a slow client's time shows as 'reading'
            board.request_started(self.params, not conn.counted)
            conn.counted = True
        conn.phase, conn._shown = 'running', None
        failed = False
        try:
            protocol_status, app_status = server.handler(self)
        except _PeerGone:
            protocol_status, app_status = fcgi_base.FCGI_REQUEST_COMPLETE, 0
        except Exception:
            failed = True
            self.status = 500
            text = traceback.format_exc()
            sys.stderr.write(text)
            self.stderr.write(text)
            if not self.stdout.dataWritten:
                server.error(self)
            protocol_status, app_status = fcgi_base.FCGI_REQUEST_COMPLETE, 0
        conn.phase = 'finishing'
        try:
            self._flush()
            self._end(app_status, protocol_status)
        except _PeerGone:
            pass
        finally:
            conn.phase = conn._shown = None
            conn.linger = conn.linger or not self.stdin._eof
            conn.kept = True
            server.request_done()
            if board is not None:
                # closes right after (no lingering): uncounted in this update;
                # else this update shows the read of the next request
                conn.released = conn.lost or not (conn._keepGoing or conn.linger)
                board.request_finished(self.status, failed, self.stdout.bytes,
                                       conn.released)
                if not conn.released:
                    conn._shown = 'reading'


class WorkerConnection(fcgi_base.Connection):
    """flup's Connection with buffered reads and writes, deadlines, and limits.

    A request from nginx arrives in one recv() and its response leaves in one
    send().  Every read and write waits at most ``server.timeout`` for the
    peer; no protocol error or peer can hang the worker or escape run().
    """

    def __init__(self, sock, addr, server, timeout=None):
        super().__init__(sock, addr, server, timeout)
        self._rbuf = b''
        self._rpos = 0
        self._out = []
        self._outlen = 0
        self._poll = None
        self.linger = False      # answered with request input unread
        self.lost = False        # the peer is gone
        self.counted = False     # the scoreboard counts this connection (open)
        self.released = False    # ... and already counted it closed
        self.kept = False        # a request was answered: now between requests
        self.phase = None        # None, 'running' (the app) or 'finishing' (the answer)
        self._shown = None       # a state shown while waiting for the peer

    # -- input ----------------------------------------------------------------

    def run(self):
        self._keepGoing = True
        try:
            while self._keepGoing and not self.lost:
                self.process_input()
            self._account()
        except _Closed:
            self._account()
        except Exception as exc:
            # Requests already running account for themselves; this is a
            # connection that broke before its request reached the app.
            self._account(protocol_error=True)
            _log('dropped connection: %s' % _reason(exc))
            self.linger = False
        finally:
            self._close()

    def _account(self, protocol_error=False):
        """Tell the scoreboard this connection is closed, unless the last
        request's update already did."""
        board = self.server.scoreboard
        if board is not None and not self.released:
            board.closed(self.counted, protocol_error)
            self.counted = self.released = True

    def process_input(self):
        rec = self._read_record()
        kind = rec.type
        if kind == fcgi_base.FCGI_PARAMS:
            self._do_params(rec)
        elif kind == fcgi_base.FCGI_STDIN:
            self._do_stdin(rec)
        elif kind == fcgi_base.FCGI_BEGIN_REQUEST:
            self._do_begin_request(rec)
        elif kind == fcgi_base.FCGI_ABORT_REQUEST:
            self._do_abort_request(rec)
        elif kind == fcgi_base.FCGI_DATA:
            self._do_data(rec)
        elif rec.requestId == fcgi_base.FCGI_NULL_REQUEST_ID:
            # management records are answered at once
            if kind == fcgi_base.FCGI_GET_VALUES:
                self._do_get_values(rec)
            else:
                self._do_unknown_type(rec)
            self.flush()

    def _read_record(self):
        if len(self._rbuf) - self._rpos < 8:
            self._fill(8)
        version, kind, request_id, length, padding = _HEADER.unpack_from(
            self._rbuf, self._rpos)
        if version != fcgi_base.FCGI_VERSION_1:
            raise ProtocolError('bad record version %d' % version)
        size = 8 + length + padding
        if len(self._rbuf) - self._rpos < size:
            self._fill(size)
        rec = fcgi_base.Record(kind, request_id)
        rec.contentLength, rec.paddingLength = length, padding
        start = self._rpos + 8
        rec.contentData = self._rbuf[start:start + length]
        self._rpos += size
        return rec

    def _fill(self, need):
        """Have ``need`` unread bytes buffered, reading as much as is there."""
        while len(self._rbuf) - self._rpos < need:
            data = self._recv(max(need - len(self._rbuf) + self._rpos, 65536))
            # kept at once: a partial record makes the connection not idle
            self._rbuf = self._rbuf[self._rpos:] + data
            self._rpos = 0

    def _idle(self):
        return not self._requests and self._rpos == len(self._rbuf)

    def _recv(self, size):
        while True:
            try:
                data = self._sock.recv(size, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                self._wait(select.POLLIN)
        if not data:
            if self._idle():
                raise _Closed()
            raise ProtocolError('connection closed in the middle of a request')
        return data

    def _wait(self, events):
        """Wait until the socket is ready, at most server.timeout; give up
        early when the worker is stopping and this connection is between
        requests.  A new connection is not: the web server has a request for
        it on the way (it connected), so it is served even while stopping."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._sock, select.POLLIN)
        self._poll.modify(self._sock, events)
        self._show_wait(events)
        deadline = time.monotonic() + self.server.timeout
        while True:
            if self.server.stopping and self.kept and self._idle() \
                    and events == select.POLLIN:
                raise _Closed()
            left = deadline - time.monotonic()
            if left <= 0:
                if self._idle():
                    raise _Closed()   # keep-alive connection unused: not an error
                raise ProtocolError('peer silent for %gs' % self.server.timeout)
            if self._poll.poll(min(left, _WAIT_SLICE) * 1000):
                return

    def _show_wait(self, events):
        """Waiting for the peer is what the scoreboard's 'reading' (for a
        request) and 'finishing' (to take the answer) show; shown only
        then, so a request that needs no wait costs two updates."""
        board = self.server.scoreboard
        if board is None:
            return
        if events == select.POLLIN and self.phase is None:
            if self._shown != 'reading':
                board.reading(not self.counted)
                self.counted = True
                self._shown = 'reading'
        elif events == select.POLLOUT and self.phase == 'finishing':
            if self._shown != 'finishing':
                board.set_state('finishing')
                self._shown = 'finishing'

    def _do_get_values(self, inrec):
        """flup's, with the names decoded: on Python 3 flup answers nothing."""
        pairs, pos = [], 0
        while pos < inrec.contentLength:
            pos, (name, _) = fcgi_base.decode_pair(inrec.contentData, pos)
            value = self.server.capability.get(name.decode('latin-1'))
            if value is not None:
                pairs.append(fcgi_base.encode_pair(name, str(value).encode('latin-1')))
        rec = fcgi_base.Record(fcgi_base.FCGI_GET_VALUES_RESULT)
        rec.contentData = b''.join(pairs)
        rec.contentLength = len(rec.contentData)
        self.writeRecord(rec)

    def _do_params(self, inrec):
        req = self._requests.get(inrec.requestId)
        if req is not None and inrec.contentLength:
            req.param_bytes += inrec.contentLength
            if req.param_bytes > MAX_PARAMS_BYTES:
                raise ProtocolError('request params over %d bytes' % MAX_PARAMS_BYTES)
        super()._do_params(inrec)

    def _start_request(self, req):
        # nginx sends the end of an empty body together with the params: take
        # it now, so a GET is fully read and needs no lingering close.
        while len(self._rbuf) - self._rpos >= 8:
            version, kind, request_id, length, padding = _HEADER.unpack_from(
                self._rbuf, self._rpos)
            if kind != fcgi_base.FCGI_STDIN or request_id != req.requestId \
                    or len(self._rbuf) - self._rpos < 8 + length + padding:
                break
            self.process_input()
        req.run()

    # -- output ---------------------------------------------------------------

    def writeRecord(self, rec):
        rec.paddingLength = -rec.contentLength & 7
        self._out.append(_HEADER.pack(rec.version, rec.type, rec.requestId,
                                      rec.contentLength, rec.paddingLength))
        if rec.contentLength:
            self._out.append(rec.contentData)
            if rec.paddingLength:
                self._out.append(_PAD[:rec.paddingLength])

    def write_stream(self, kind, request_id, data):
        """Buffer ``data`` as records of ``kind``; sent at the end of the request."""
        view = memoryview(data)
        for start in range(0, len(view), _MAX_CONTENT):
            chunk = view[start:start + _MAX_CONTENT]
            padding = -len(chunk) & 7
            self._out.append(_HEADER.pack(1, kind, request_id, len(chunk), padding))
            self._out.append(chunk)
            if padding:
                self._out.append(_PAD[:padding])
        self._outlen += len(view)
        if self._outlen >= _FLUSH_AT:
            self.flush()

    def flush(self):
        """Send the buffered records; _PeerGone if the peer is gone or stuck."""
        out, self._out, self._outlen = self._out, [], 0
        if not out or self.lost:
            return
        data = memoryview(b''.join(out))
        try:
            while data:
                try:
                    sent = self._sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    self._wait(select.POLLOUT)
                    continue
                data = data[sent:]
        except (OSError, ProtocolError) as exc:
            self.lost = True
            raise _PeerGone(_reason(exc))

    def end_request(self, req, appStatus=0,
                    protocolStatus=fcgi_base.FCGI_REQUEST_COMPLETE, remove=True):
        rec = fcgi_base.Record(fcgi_base.FCGI_END_REQUEST, req.requestId)
        rec.contentData = struct.pack(fcgi_base.FCGI_EndRequestBody, appStatus,
                                      protocolStatus)
        rec.contentLength = fcgi_base.FCGI_EndRequestBody_LEN
        self.writeRecord(rec)
        self.flush()
        if remove:
            self._requests.pop(req.requestId, None)
        if not (req.flags & fcgi_base.FCGI_KEEP_CONN) and not self._requests:
            self._keepGoing = False

    def _close(self):
        sock = self._sock
        try:
            if self.linger and not self.lost:
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + _LINGER
                while time.monotonic() < deadline:
                    if not select.select([sock], [], [], deadline - time.monotonic())[0] \
                            or not sock.recv(65536):
                        break
        except OSError:
            pass
        sock.close()


def _reason(exc):
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _WorkerMixin:
    """What both flup servers get: our connection, request and WSGI gateway,
    the accept loop on fd 0, signals, scoreboard and max-requests."""

    request_class = WorkerRequest

    def _setup(self, listener, threads, timeout, max_requests, scoreboard):
        self.listener = listener
        self.threads = threads
        self.timeout = timeout
        self.max_requests = max_requests
        self.scoreboard = scoreboard
        self.stopping = False
        self.stop_reason = None
        self._served = itertools.count(1)
        self._tcp = listener.family in (socket.AF_INET, socket.AF_INET6)
        # flup's FCGI_WEB_SERVER_ADDRS: the web servers allowed to connect (TCP)
        addrs = os.environ.get('FCGI_WEB_SERVER_ADDRS')
        self._allowed = None
        if addrs and self._tcp:
            self._allowed = {addr.strip() for addr in addrs.split(',')}
        elif addrs:
            _log('FCGI_WEB_SERVER_ADDRS ignored: the pool socket is not TCP')
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._detached = False
        self.capability = {fcgi_base.FCGI_MAX_CONNS: threads,
                           fcgi_base.FCGI_MAX_REQS: threads,
                           fcgi_base.FCGI_MPXS_CONNS: 0}
        self._wsgi_environ = dict(self.environ)
        self._wsgi_environ.update({'wsgi.version': (1, 0), 'wsgi.multithread': threads > 1,
                                   'wsgi.multiprocess': True, 'wsgi.run_once': False,
                                   'wsgi.url_scheme': 'http'})

    # -- signals ----------------------------------------------------------------

    def handle_stop(self, signum, frame):
        """Stop accepting; requests in flight finish.

        The accept() is not interruptible from Python: PEP 475 retries it after
        a handler that returns, and a handler that raises could fire just after
        the kernel handed us a connection, which would then be lost.  Instead
        fd 0 becomes /dev/null: the retried accept() fails at once (ENOTSOCK),
        a connection accepted before that is still served, and none can be
        accepted after.  The pool's socket stays open in supervisord and in
        the other workers.
        """
        if not self.stopping:
            self.stop_reason = signal.Signals(signum).name
        self.stopping = True
        if not self._detached:
            self._detached = True
            os.dup2(self._devnull, self.listener.fileno())

    def request_done(self):
        if self.max_requests and next(self._served) >= self.max_requests \
                and not self.stopping:
            self.stop_reason = 'max-requests (%d)' % self.max_requests
            self.stopping = True

    # -- the accept loop ------------------------------------------------------------

    def serve(self):
        """Accept and serve until a stop signal or max-requests; return the exit code."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle_stop)
        if self.scoreboard is not None:
            self.scoreboard.ready()
        try:
            while not self.stopping:
                if not self._wait_for_thread():
                    continue
                try:
                    sock, addr = self.listener.accept()
                except OSError as exc:
                    self._release_thread()
                    if self.stopping:
                        break
                    self._accept_failed(exc)
                    continue
                if self._tcp:
                    if self._allowed is not None and addr[0] not in self._allowed:
                        self._release_thread()
                        sock.close()
                        continue
                    # A streamed answer leaves in several sends; with Nagle the
                    # last waits for the web server's delayed ACK (~40 ms on
                    # a kept-alive connection).
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._dispatch(WorkerConnection(sock, addr, self, None))
        finally:
            self._drain()
            self._detached = True    # from here on a stop signal has nothing to do
            self.listener.close()
            os.close(self._devnull)
            if self.scoreboard is not None:
                self.scoreboard.close()
        _log('stopped: %s' % self.stop_reason)
        return EXIT_OK

    def _accept_failed(self, exc):
        if exc.errno == errno.EAGAIN:
            # A worker of another kind made the shared socket non-blocking.
            select.select([self.listener], [], [], 1.0)
        elif exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            _log('accept failed: %s' % _reason(exc))
            time.sleep(0.1)
        elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            raise exc

    # -- the WSGI gateway -------------------------------------------------------

    def handler(self, req):
        """flup's WSGI gateway, leaner: a list response is sent whole at the end
        of the request, an iterator's chunks as they come."""
        if req.role not in self.roles:
            return fcgi_base.FCGI_UNKNOWN_ROLE, 0
        environ = req.params
        environ.update(self._wsgi_environ)
        environ['wsgi.input'] = req.stdin
        environ['wsgi.errors'] = req.stderr
        if environ.get('HTTPS', 'off') in ('on', '1'):
            environ['wsgi.url_scheme'] = 'https'
        self._sanitizeEnv(environ)
        response = []      # [status, headers] once start_response was called
        sent = []          # non-empty once the headers are out
        out = req.stdout

        def send_headers(body, extra=b''):
            status, headers = response
            lines = [b'Status: ', status, b'\r\n']
            for name, value in headers:
                lines += (name, b': ', value, b'\r\n')
            lines += (extra, b'\r\n', body)
            out.write(b''.join(lines))
            sent.append(True)

        def write(data):
            if not response:
                raise AssertionError('write() before start_response()')
            if sent:
                out.write(_bytes(data))
            else:
                send_headers(_bytes(data))
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
            status = _bytes(status)
            req.status = int(status[:3])
            response[:] = [status, [(_bytes(k), _bytes(v)) for k, v in headers]]
            return write

        result = self.application(environ, start_response)
        try:
            if isinstance(result, (list, tuple)):
                req._conn.phase = 'finishing'     # the app is done
                body = b''.join(map(_bytes, result))
                if not response:
                    raise AssertionError('app returned before start_response()')
                if sent:
                    out.write(body)
                else:
                    has_length = any(k.lower() == b'content-length' for k, _ in response[1])
                    send_headers(body, b'' if has_length else
                                 b'Content-Length: %d\r\n' % len(body))
            else:
                for data in result:
                    if data:
                        write(data)
                if not sent:
                    write(b'')
        finally:
            if hasattr(result, 'close'):
                result.close()
        return fcgi_base.FCGI_REQUEST_COMPLETE, 0


def _bytes(value):
    return value.encode('latin-1') if isinstance(value, str) else value


class SingleWorker(_WorkerMixin, fcgi_single.WSGIServer):
    """One connection at a time, served in the accepting thread."""

    def __init__(self, application, listener, timeout=DEFAULT_TIMEOUT,
                 max_requests=0, scoreboard=None):
        fcgi_single.WSGIServer.__init__(self, application)
        self._setup(listener, 1, timeout, max_requests, scoreboard)

    def _wait_for_thread(self):
        return True

    def _release_thread(self):
        pass

    def _dispatch(self, conn):
        conn.run()

    def _drain(self):
        pass


class ThreadedWorker(_WorkerMixin, fcgi.WSGIServer):
    """Up to ``threads`` connections at once on flup's thread pool; accepts
    only while a thread is free, so extra connections wait in the listen
    queue for another worker instead of being refused."""

    def __init__(self, application, listener, threads, timeout=DEFAULT_TIMEOUT,
                 max_requests=0, scoreboard=None):
        # Pool threads inherit a mask without the stop signals, so the kernel
        # delivers them to the main thread and interrupts its accept().
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            fcgi.WSGIServer.__init__(self, application, multiprocess=True,
                                     minSpare=threads, maxSpare=threads,
                                     maxThreads=threads)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self._setup(listener, threads, timeout, max_requests, scoreboard)
        self._free = threading.BoundedSemaphore(threads)

    def _wait_for_thread(self):
        return self._free.acquire(timeout=_WAIT_SLICE)

    def _release_thread(self):
        self._free.release()

    def _dispatch(self, conn):
        self._threadPool.addJob(_Job(conn, self._free))

    def _drain(self):
        # flup's shutdown() drops jobs no thread has picked up yet: a
        # connection accepted just before a stop would be closed unserved.
        # Every job frees its place when done, so take them all first.
        for _ in range(self.threads):
            self._free.acquire()
        self._threadPool.shutdown()


class _Job:
    """A connection for the thread pool that frees its thread's place when done."""

    def __init__(self, conn, free):
        self.conn, self.free = conn, free

    def run(self):
        try:
            self.conn.run()
        finally:
            self.free.release()


# -- command line -----------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fcgi-worker', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[2:]))
    parser.add_argument('app', nargs='?', metavar='module:callable',
                        help='WSGI app to serve (default: the pid demo)')
    parser.add_argument('--threads', type=int, default=1, metavar='N',
                        help='connections served at once (default 1)')
    parser.add_argument('--max-requests', type=int, default=0, metavar='N',
                        help='exit 0 after N requests, to be respawned (default 0: never)')
    parser.add_argument('--max-requests-jitter', type=int, default=0, metavar='J',
                        help='add 0..J to --max-requests, so a pool does not '
                             'restart all at once')
    parser.add_argument('--python-scoreboard', action='store_true',
                        help="write the scoreboard in pure Python even where the "
                             "C writer is built (to compare, or to rule it out)")
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT, metavar='SECONDS',
                        help='longest wait for the peer on a connection (default %g)'
                             % DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    for name in ('threads', 'max_requests', 'max_requests_jitter'):
        if getattr(args, name) < (1 if name == 'threads' else 0):
            parser.error('--%s must be >= %d' % (name.replace('_', '-'), name == 'threads'))
    if not args.timeout > 0:
        parser.error('--timeout must be > 0')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        listener = listening_socket(0)
    except BootError as exc:
        _log(str(exc))
        return WORKER_BOOT_ERROR
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    max_requests = args.max_requests
    if max_requests and args.max_requests_jitter:
        max_requests += random.randint(0, args.max_requests_jitter)
    board = SlotWriter.from_environ(threads=args.threads, max_requests=max_requests,
                                    use_c=not args.python_scoreboard)
    try:
        app = load_app(args.app) if args.app else demo_app
    except ValueError as exc:
        _log(str(exc))
        return APP_LOAD_ERROR
    if args.threads > 1:
        server = ThreadedWorker(app, listener, args.threads, args.timeout,
                                max_requests, board)
    else:
        server = SingleWorker(app, listener, args.timeout, max_requests, board)
    _log('serving %s on %s (%s%s%s)' % (
        args.app or 'the demo app', describe(listener),
        '%d threads' % args.threads if args.threads > 1 else 'single-threaded',
        ', max %d requests' % max_requests if max_requests else '',
        ', scoreboard %s (%s writer)' % (board.path, board.kind) if board else ''))
    return server.serve()


if __name__ == '__main__':
    sys.exit(main())
