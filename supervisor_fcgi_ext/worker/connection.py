"""One connection from the web server: its socket, records and deadlines.

Records are framed by common/fastcgi.py; this module moves them through the
socket.  A request from nginx arrives in one recv() and its response leaves
in one send().  Every read and write waits at most ``server.timeout`` for
the peer; no protocol error or peer can hang the worker or escape run().
"""
from __future__ import annotations

import functools
import select
import socket
import time

from flup.server.fcgi_base import InputStream

from supervisor_fcgi_ext.common import fastcgi
from supervisor_fcgi_ext.common.fastcgi import (
    ABORT_REQUEST, BEGIN_REQUEST, DATA, END_REQUEST, GET_VALUES, GET_VALUES_RESULT,
    KEEP_CONN, NULL_REQUEST_ID, PARAMS, RESPONDER, STDIN, UNKNOWN_TYPE, ProtocolError,
    RecordReader,
    decode_pairs, decode_params, encode_pair, encode_record, frame_stream,
)
from supervisor_fcgi_ext.common.scoreboard import os_reason
from supervisor_fcgi_ext.worker import log

__all__ = ['WorkerConnection', 'PeerGone', 'ProtocolError', 'MAX_PARAMS_BYTES', 'reason']

# A request's params beyond this are an attack or a bug, not nginx.
MAX_PARAMS_BYTES = 1 << 20
# Buffered output is sent when it reaches this, else at the end of the request.
_FLUSH_AT = 256 * 1024
# Waits are cut in slices to notice a stop request on an idle connection.
WAIT_SLICE = 0.5
# After answering with request input left unread, read it (up to this long)
# before closing: closing with unread data resets the connection.
_LINGER = 2.0


class Closed(Exception):
    """The connection ended between requests: nothing went wrong."""


class PeerGone(Exception):
    """The web server went away while we answered: nobody to answer."""


@functools.lru_cache(maxsize=64)
def end_record(request_id, app_status, protocol_status):
    """An END_REQUEST record; nginx's requests are all id 1: made once."""
    return encode_record(END_REQUEST, request_id,
                         fastcgi.end_request(app_status, protocol_status))


def reason(exc):
    """Why a connection failed, in a few words."""
    if isinstance(exc, OSError):
        return os_reason(exc)
    return str(exc) or type(exc).__name__


class WorkerConnection:
    """A connection's requests, one at a time (FCGI_MPXS_CONNS is 0), as
    flup's Connection with buffered reads and writes, deadlines and limits;
    ``server`` is the worker (base.py), ``server.request_class`` the request."""

    def __init__(self, sock, addr, server):
        self._sock = sock
        self._addr = addr
        self.server = server
        self._requests = {}
        self.keep_going = True    # the web server keeps the connection
        self._reader = RecordReader()
        self._out = []
        self._outlen = 0
        self._poll = None
        self.linger = False      # answered with request input unread
        self.lost = False        # the peer is gone
        self.counted = False     # the scoreboard counts this connection (open)
        self.released = False    # ... and already counted it closed
        self.kept = False        # a request was answered: now between requests
        self.phase = None        # None, 'running' (the app) or 'finishing' (the answer)
        self.shown = None        # a state shown while waiting for the peer

    # -- input ----------------------------------------------------------------

    def run(self, first=b'', then=None):
        """Serve the connection's requests until it closes.  ``first``: what
        the fast path (fastpath.py) read of it already, or the OSError its
        read failed with; ``then``: the rest of a request it began."""
        reader = self._reader
        try:
            if then is not None:
                then()
            elif isinstance(first, OSError):
                raise first
            else:
                reader.feed(first)
            while self.keep_going and not self.lost:
                if not self._requests:
                    # between requests: one whole in what arrived, as nginx
                    # sends it, is taken at once (the C codec); else record
                    # by record
                    if not reader.buffered:
                        reader.feed(self._recv(65536))
                    whole = reader.next_request(MAX_PARAMS_BYTES)
                    if whole is not None:
                        self._run_whole(*whole)
                        continue
                self.process_input()
            self._account()
        except Closed:
            self._account()
        except Exception as exc:
            # Requests already running account for themselves; this is a
            # connection that broke before its request reached the app.
            self._account(protocol_error=True)
            log('dropped connection: %s' % reason(exc))
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
        """Read one record and act on it (flup's InputStream calls this to
        wait for more of a request's body)."""
        rec = self._read_record()
        kind = rec.type
        if kind == PARAMS:
            self._do_params(rec)
        elif kind == STDIN:
            req = self._requests.get(rec.request_id)
            if req is not None:
                req.stdin.add_data(rec.content)
        elif kind == BEGIN_REQUEST:
            self._do_begin_request(rec)
        elif kind == ABORT_REQUEST:
            req = self._requests.get(rec.request_id)
            if req is not None:
                req.aborted = True
        elif kind == DATA:
            req = self._requests.get(rec.request_id)
            if req is not None:
                req.data.add_data(rec.content)
        elif rec.request_id == NULL_REQUEST_ID:
            # management records are answered at once
            if kind == GET_VALUES:
                self._do_get_values(rec)
            else:
                self._out.append(encode_record(UNKNOWN_TYPE, NULL_REQUEST_ID,
                                               fastcgi.unknown_type(kind)))
            self.flush()

    def _read_record(self):
        reader = self._reader
        rec = reader.next_record()
        while rec is None:
            reader.feed(self._recv(max(reader.missing, 65536)))
            rec = reader.next_record()
        return rec

    def idle(self):
        """Between requests, with nothing of the next one read."""
        return not self._requests and not self._reader.buffered

    def _recv(self, size):
        while True:
            try:
                data = self._sock.recv(size, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                self._wait(select.POLLIN)
        if not data:
            if self.idle():
                raise Closed()
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
            if self.server.stopping and self.kept and self.idle() \
                    and events == select.POLLIN:
                raise Closed()
            left = deadline - time.monotonic()
            if left <= 0:
                if self.idle():
                    raise Closed()   # keep-alive connection unused: not an error
                raise ProtocolError('peer silent for %gs' % self.server.timeout)
            if self._poll.poll(min(left, WAIT_SLICE) * 1000):
                return

    def _show_wait(self, events):
        """Waiting for the peer is what the scoreboard's 'reading' (for a
        request) and 'finishing' (to take the answer) show; shown only
        then, so a request that needs no wait costs two updates."""
        board = self.server.scoreboard
        if board is None:
            return
        if events == select.POLLIN and self.phase is None:
            if self.shown != 'reading':
                board.reading(not self.counted)
                self.counted = True
                self.shown = 'reading'
        elif events == select.POLLOUT and self.phase == 'finishing':
            if self.shown != 'finishing':
                board.set_state('finishing')
                self.shown = 'finishing'

    def _do_get_values(self, rec):
        """The values asked for that the worker knows (flup answers none on
        Python 3: it looks bytes up by str)."""
        known = self.server.capability
        answer = [encode_pair(name, str(known[name.decode('latin-1')]))
                  for name, _ in decode_pairs(rec.content)
                  if name.decode('latin-1') in known]
        self._out.append(encode_record(GET_VALUES_RESULT, NULL_REQUEST_ID, b''.join(answer)))

    def _new_request(self, request_id, role, flags):
        req = self.server.request_class(self, InputStream, None)
        req.requestId, req.role, req.flags, req.aborted = request_id, role, flags, False
        return req

    def adopt(self, request_id, flags, environ):
        """The request the fast path began on this connection (its whole
        body read, the scoreboard told, the app running with ``environ``),
        made as _run_whole would have made it."""
        self.counted = True
        self.phase = 'running'
        req = self._new_request(request_id, RESPONDER, flags)
        self._requests[request_id] = req
        req.params = environ
        req.stdin.add_data(b'')
        return req

    def _do_begin_request(self, rec):
        role, flags = fastcgi.parse_begin_request(rec.content)
        req = self._new_request(rec.request_id, role, flags)
        if self._requests:
            self.end_request(req, 0, fastcgi.CANT_MPX_CONN, remove=False)
        else:
            self._requests[rec.request_id] = req

    def _run_whole(self, request_id, role, flags, params, param_bytes, stdin):
        """What _do_begin_request, _do_params and _start_request do for a
        request read whole by RecordReader.next_request."""
        req = self._new_request(request_id, role, flags)
        self._requests[request_id] = req
        req.params, req.param_bytes = params, param_bytes
        for data in stdin:
            req.stdin.add_data(data)
        req.run()

    def _do_params(self, rec):
        req = self._requests.get(rec.request_id)
        if req is None:
            return
        if not rec.content:
            self._start_request(req)
            return
        req.param_bytes += len(rec.content)
        if req.param_bytes > MAX_PARAMS_BYTES:
            raise ProtocolError('request params over %d bytes' % MAX_PARAMS_BYTES)
        decode_params(rec.content, req.params)

    def _start_request(self, req):
        # nginx sends the end of an empty body together with the params: take
        # it now, so a GET is fully read and needs no lingering close.
        while self._reader.peek() == (STDIN, req.requestId):
            self.process_input()
        req.run()

    # -- output ---------------------------------------------------------------

    def write_stream(self, kind, request_id, data, end=False):
        """Buffer ``data`` as records of ``kind`` (``end``: and the end of the
        stream); sent at the end of the request, or once _FLUSH_AT is buffered."""
        self._out.append(frame_stream(kind, request_id, data, end))
        self._outlen += len(data)
        if self._outlen >= _FLUSH_AT:
            self.flush()

    def flush(self):
        """Send the buffered records; PeerGone if the peer is gone or stuck."""
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
            raise PeerGone(reason(exc))

    def end_request(self, req, appStatus=0, protocolStatus=fastcgi.REQUEST_COMPLETE,
                    remove=True):
        """flup's Request._end calls this: END_REQUEST, sent with what is buffered."""
        self._out.append(end_record(req.requestId, appStatus, protocolStatus))
        self.flush()
        if remove:
            self._requests.pop(req.requestId, None)
        if not (req.flags & KEEP_CONN) and not self._requests:
            self.keep_going = False

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
