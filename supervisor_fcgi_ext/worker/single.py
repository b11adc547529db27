"""One connection at a time, served in the accepting thread.

Idle single workers wait in a blocking accept(), which the kernel serves
first-in first-out, so a pool spreads its connections evenly.
"""
from __future__ import annotations

from flup.server import fcgi_single

from supervisor_fcgi_ext.worker.base import DEFAULT_TIMEOUT, WorkerBase

__all__ = ['SingleWorker']


class SingleWorker(WorkerBase, fcgi_single.WSGIServer):
    """fcgi-worker without --threads."""

    def __init__(self, application, listener, timeout=DEFAULT_TIMEOUT,
                 max_requests=0, scoreboard=None):
        fcgi_single.WSGIServer.__init__(self, application)
        self._setup(listener, 1, timeout, max_requests, scoreboard)

    def _wait_for_thread(self):
        return True

    def _release_thread(self):
        pass

    def _dispatch(self, fd, addr):
        self.serve_connection(fd, addr)

    def _drain(self):
        pass
