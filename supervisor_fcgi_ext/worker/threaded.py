"""--threads N: up to N connections at once, on flup's thread pool."""
from __future__ import annotations

import signal
import threading

from flup.server import fcgi

from supervisor_fcgi_ext.worker.base import DEFAULT_TIMEOUT, STOP_SIGNALS, WorkerBase
from supervisor_fcgi_ext.worker.connection import WAIT_SLICE

__all__ = ['ThreadedWorker']


class ThreadedWorker(WorkerBase, fcgi.WSGIServer):
    """Up to ``threads`` connections at once; accepts only while a thread is
    free, so extra connections wait in the listen queue for another worker
    instead of being refused (flup's own server closes them)."""

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
        return self._free.acquire(timeout=WAIT_SLICE)

    def _release_thread(self):
        self._free.release()

    def _dispatch(self, fd, addr):
        self._threadPool.addJob(_Job(self, fd, addr))

    def _drain(self):
        # flup's shutdown() drops jobs no thread has picked up yet: a
        # connection accepted just before a stop would be closed unserved.
        # Every job frees its place when done, so take them all first.
        for _ in range(self.threads):
            self._free.acquire()
        self._threadPool.shutdown()


class _Job:
    """A connection for the thread pool that frees its thread's place when done."""

    def __init__(self, server, fd, addr):
        self.server, self.fd, self.addr = server, fd, addr

    def run(self):
        try:
            self.server.serve_connection(self.fd, self.addr)
        finally:
            self.server._release_thread()
