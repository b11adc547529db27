"""What both process models share: the accept loop on fd 0, the stop
signals, max-requests, FCGI_WEB_SERVER_ADDRS, and the scoreboard's life."""
from __future__ import annotations

import errno
import itertools
import os
import select
import signal
import socket
import time

from supervisor_fcgi_ext.worker import fastpath, gateway, log
from supervisor_fcgi_ext.worker.connection import WorkerConnection, reason

__all__ = ['WorkerBase', 'STOP_SIGNALS', 'DEFAULT_TIMEOUT', 'EXIT_OK']

EXIT_OK = 0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DEFAULT_TIMEOUT = 30.0


class WorkerBase:
    """Mixed into a flup server: our connection, request and WSGI gateway,
    the accept loop on fd 0, signals, scoreboard and max-requests.  A
    process model adds _wait_for_thread, _release_thread, _dispatch (which
    has serve_connection serve an accepted fd), _drain."""

    request_class = gateway.WorkerRequest
    handler = gateway.handle

    def _setup(self, listener, threads, timeout, max_requests, scoreboard):
        self.listener = listener
        self.threads = threads
        self.timeout = timeout
        self.max_requests = max_requests
        self.scoreboard = scoreboard
        self.stopping = False
        self.stop_reason = None
        self._served = itertools.count(1)
        self.tcp = listener.family in (socket.AF_INET, socket.AF_INET6)
        # socket.accept() less its per-call enum conversions of family and
        # type (a tenth of a hello-world request's Python): the same socket
        self.socket_kind = (int(listener.family), int(listener.type), listener.proto)
        # flup's FCGI_WEB_SERVER_ADDRS: the web servers allowed to connect (TCP)
        addrs = os.environ.get('FCGI_WEB_SERVER_ADDRS')
        self._allowed = None
        if addrs and self.tcp:
            self._allowed = {addr.strip() for addr in addrs.split(',')}
        elif addrs:
            log('FCGI_WEB_SERVER_ADDRS ignored: the pool socket is not TCP')
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._detached = False
        self.capability = {'FCGI_MAX_CONNS': threads, 'FCGI_MAX_REQS': threads,
                           'FCGI_MPXS_CONNS': 0}
        self.wsgi_base = dict(self.environ)
        self.wsgi_base.update({'wsgi.version': (1, 0), 'wsgi.multithread': threads > 1,
                               'wsgi.multiprocess': True, 'wsgi.run_once': False,
                               'wsgi.url_scheme': 'http'})
        self.fast = fastpath.fast_server(self)
        self.fast_loop = self.fast is not None and threads == 1 and self._allowed is None

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
                if self.fast_loop:
                    # one thread, every web server allowed: the fast path
                    # accepts too, and returns what is not its own
                    try:
                        got = self.fast.accept_loop(self.listener.fileno(), self)
                    except Exception as exc:
                        self._fast_failed(exc)
                        continue
                    if isinstance(got, tuple):
                        self.serve_connection(got[0], None, got[1])
                    elif got is not None and not self._accept_failed(got):
                        break
                    continue
                if not self._wait_for_thread():
                    continue
                try:
                    fd, addr = self.listener._accept()
                except OSError as exc:
                    self._release_thread()
                    if not self._accept_failed(exc):
                        break
                    continue
                if self._allowed is not None and addr[0] not in self._allowed:
                    self._release_thread()
                    os.close(fd)
                    continue
                self._dispatch(fd, addr)
        finally:
            self._drain()
            self._detached = True    # from here on a stop signal has nothing to do
            self.listener.close()
            os.close(self._devnull)
            if self.scoreboard is not None:
                self.scoreboard.close()
        log('stopped: %s' % self.stop_reason)
        return EXIT_OK

    def serve_connection(self, fd, addr, first=None):
        """Serve the connection accepted as ``fd``, in the thread that
        serves it: by the fast path (fastpath.py) when it brings the
        ordinary request, else by WorkerConnection, from what the fast
        path read (``first``: it looked already, in accept_loop)."""
        if first is None and self.fast is not None:
            try:
                first = self.fast.serve(fd)
            except Exception as exc:
                self._fast_failed(exc)
                return
            if first is True:
                self.request_done()
                return
            if first is None:
                return          # handed over: accounted for by the Python path
        sock = socket.socket(*self.socket_kind, fd)
        if self.tcp and self.fast is None:
            # A streamed answer leaves in several sends; with Nagle the
            # last waits for the web server's delayed ACK (~40 ms on a
            # kept-alive connection).  (The fast path sets it itself.)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        WorkerConnection(sock, addr, self).run(first or b'')

    @staticmethod
    def _fast_failed(exc):
        """The fast path failed in itself (the app's errors are answered, as
        on the Python path; this is memory or the slot): the connection is
        lost (it closed it), the worker goes on, as WorkerConnection.run."""
        log('dropped connection: %s' % reason(exc))

    def _accept_failed(self, exc):
        """After a failed accept(): False when the worker stops (a stop
        signal made it fail), else True once dealt with."""
        if self.stopping:
            return False
        if exc.errno == errno.EAGAIN:
            # A worker of another kind made the shared socket non-blocking.
            select.select([self.listener], [], [], 1.0)
        elif exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log('accept failed: %s' % reason(exc))
            time.sleep(0.1)
        elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            raise exc
        return True
