"""A once-a-second call from inside supervisord's main loop.

supervisord's smallest tick event is TICK_5, too coarse to catch a one-second
burst in a listen queue (PHP-FPM samples every second).  But every pass of
supervisord's loop asks each dispatcher of the asyncore socket map whether it
is readable, and a pass happens at least once a second (the poll timeout).  A
dispatcher that always answers "no" is therefore a tick that costs nothing
when due work is nil, needs no thread, and runs in the same thread as
everything it reads.

The entry is keyed by the read end of a pipe of our own, so its key can never
collide with a real dispatcher's fd.
"""

import os
import time

from supervisor.medusa import asyncore_25 as asyncore

__all__ = ['LoopHook']


class LoopHook:
    """Call `callback()` from supervisord's loop at most every `interval` s."""

    def __init__(self, callback, interval, logger, clock=time.monotonic,
                 socket_map=None):
        self.callback = callback
        self.interval = interval
        self.logger = logger
        self.clock = clock
        self.socket_map = asyncore.socket_map if socket_map is None else socket_map
        self.due = 0.0
        self.fd, self._write_fd = os.pipe()
        self._identity = _fd_identity(self.fd)
        self.socket_map[self.fd] = self

    # -- what supervisord's loop calls ---------------------------------------

    def readable(self):
        now = self.clock()
        if now >= self.due:
            # The loop wakes about once a second; allow a little early so a
            # 1 s interval does not slip to 2 s on a pass that came 10 ms soon.
            self.due = now + self.interval * 0.9
            try:
                self.callback()
            except Exception as e:  # an exception here would kill supervisord
                self.logger.error('fcgi: sampling failed: %r' % (e,))
        return False

    def writable(self):
        return False

    def handle_error(self):  # never polled, but keep asyncore's contract
        pass

    def close(self):
        """Leave the socket map; close our pipe only if the fds are still ours.

        supervisord closes every fd >= 5 before a reload (cleanup_fds), so by
        then the numbers may belong to someone else.
        """
        if self.socket_map.get(self.fd) is self:
            del self.socket_map[self.fd]
        if _fd_identity(self.fd) == self._identity:
            for fd in (self.fd, self._write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass


def _fd_identity(fd):
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
