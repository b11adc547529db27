"""The ordinary request in one C call (worker/_fastpath.c), and the hand
over of the others to the Python path.

The ordinary request is what nginx sends on a new connection: whole in one
recv(), a responder's, without FCGI_KEEP_CONN, its body complete, answered
with a list or tuple.  _fastpath.Server.serve(fd) reads, accounts and
answers it with no Python call but the app's.  A request it cannot take it
leaves before anything is done (WorkerConnection starts from the bytes it
read); one that turns out unusual while the app runs (an exception,
write(), wsgi.errors, an iterator, a body that is not bytes) it hands to
adopt and conclude here, which make the connection and request the Python
path would have made and finish it as that path does.  Off without the C
codec (FCGI_PURE_PYTHON=1): the Python path is the reference for both.
"""
from __future__ import annotations

import functools
import io
import socket

from supervisor_fcgi_ext.common import fastcgi
from supervisor_fcgi_ext.common.fastcgi import RESPONDER, to_bytes
from supervisor_fcgi_ext.worker.connection import MAX_PARAMS_BYTES, WorkerConnection
from supervisor_fcgi_ext.worker.gateway import Answer, encode_headers, encode_status

try:
    from supervisor_fcgi_ext.worker import _fastpath
except ImportError:        # not built: no compiler or Python headers
    _fastpath = None

__all__ = ['fast_server', 'adopt', 'conclude']


def fast_server(server):
    """The fast path for the worker ``server`` (base.py), or None: not
    built, the Python codec in use, or a server whose environ or roles are
    not fcgi-worker's own."""
    if _fastpath is None or fastcgi.CODEC != 'C' or server.environ \
            or tuple(server.roles) != (RESPONDER,):
        return None
    return _fastpath.Server(
        fastcgi.C_CODEC.parse_request, server.application, server.wsgi_base,
        server.scoreboard, functools.partial(adopt, server), conclude, encode_status,
        encode_headers, to_bytes, io.BytesIO, MAX_PARAMS_BYTES, server.timeout, server.tcp)


def adopt(server, fd, request_id, flags, environ, status, code, headers):
    """The Python side of a request the fast path began, the app running:
    the connection (owning ``fd``), the request with this ``environ`` and
    the app's answer so far (``status`` None: start_response not called
    yet); returns that gateway.Answer."""
    conn = WorkerConnection(socket.socket(*server.socket_kind, fd), None, server)
    req = conn.adopt(request_id, flags, environ)
    environ['wsgi.errors'] = req.stderr
    answer = Answer(req)
    if status is not None:
        answer.response[:] = [status, headers]
        req.status = code
    return answer


def conclude(answer, result, exc):
    """Finish an adopted request as the Python path does: send the app's
    ``result``, or answer ``exc``, what it raised; account, close."""
    req = answer.req
    req.connection.run(then=functools.partial(req.conclude, answer.conclude, result, exc))
