"""Socket activation: start an ondemand pool's first worker when a
connection arrives, not at the next sample.

While an ondemand pool has no worker, its listening socket stays open (the
plugin holds it) and connections wait in its backlog.  An `Activation` is a
dispatcher in supervisord's own asyncore map, keyed by the listening
socket's fd: supervisord's loop polls that fd for readability along with
its own, and a listening socket becomes readable when a connection is
waiting.  The dispatcher then calls back once and leaves the map.  It never
accepts or reads: the connection is the worker's to accept.

It is in the map only while armed, so a socket with a connection waiting
never makes supervisord's loop spin: after it fires, supervisord sees it is
no longer readable and stops polling the fd.
"""

from supervisor.medusa import asyncore_25 as asyncore

__all__ = ['Activation']


class Activation:
    """Call `callback()` once, from supervisord's loop, when `sock` has a
    connection waiting; leave the map after that or on close()."""

    def __init__(self, sock, callback, logger, socket_map=None):
        self.sock = sock
        self.fd = sock.fileno()
        self.callback = callback
        self.logger = logger
        self.socket_map = asyncore.socket_map if socket_map is None else socket_map
        self.armed = False
        if self.fd < 0 or self.fd in self.socket_map:
            # closed, or the fd is some dispatcher's own: never displace it
            logger.warn('fcgi: cannot watch socket fd %d for activation'
                        % self.fd)
            return
        self.socket_map[self.fd] = self
        self.armed = True

    # -- what supervisord's loop calls ---------------------------------------

    def readable(self):
        if not self._watching():
            self.close()
            return False
        return True

    def writable(self):
        return False

    def handle_read_event(self):
        if not self._watching():
            self.close()
            return
        self.close()
        try:
            self.callback()
        except Exception as e:   # an exception here would reach supervisord
            self.logger.error('fcgi: socket activation failed: %r' % (e,))

    def handle_write_event(self):
        pass

    def handle_error(self):   # supervisord calls it if a handler raised
        self.close()

    # -- ours ------------------------------------------------------------------

    def _watching(self):
        """Armed, and the fd still the socket's (not closed and reused)."""
        return self.armed and self.sock.fileno() == self.fd

    def close(self):
        if self.socket_map.get(self.fd) is self:
            del self.socket_map[self.fd]
        self.armed = False
