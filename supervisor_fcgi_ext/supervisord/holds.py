"""Keep a pool's listening socket open while none of its workers runs.

supervisor closes an fcgi-program's socket when the reference count of its
SocketManager drops to zero, i.e. when the last worker exits (supervisor
issue 766): clients, nginx among them, are refused until a worker starts
again.  Each worker's reference is a `socket_manager.Proxy` that decrements
the count when it is garbage; one more Proxy of our own keeps the count
above zero, so the socket stays open and connections wait in its backlog.

A hold is taken when a pool's worker starts (the socket exists then) and let
go when the pool is removed (so a re-added pool can bind the same address)
and when supervisord stops or reloads (a reload re-creates every group, and
an old socket still open would make the new bind fail: EADDRINUSE stops
supervisord at start).
"""

import os
import stat

__all__ = ['SocketHolds', 'kept_open_by_plugin', 'remove_unix_socket_file']


class SocketHolds:
    """One extra reference per pool socket, keyed by pool name."""

    def __init__(self, logger):
        self.logger = logger
        self._held = {}   # pool name: (group, Proxy)

    def hold(self, group, open_socket=False):
        """Take a reference to the group's socket if it is open (or open it
        with `open_socket`); idempotent."""
        name = group.config.name
        known = self._held.get(name)
        if known is not None and known[0] is group:
            return
        if known is not None:           # a group `update` replaced
            self.release(name)
        manager = group.socket_manager
        if open_socket or manager.is_prepared():
            self._held[name] = (group, manager.get_socket())
            self.logger.info('fcgi: holding socket %s of pool %s'
                             % (group.config.socket_config, name))

    def release(self, name):
        """Drop our reference: the socket closes now if no worker has it."""
        known = self._held.pop(name, None)
        if known is not None:
            # The Proxy's __del__ decrements supervisor's count right here
            # (CPython frees it with its last reference, which is ours).
            del known

    def release_all(self):
        for name in list(self._held):
            self.release(name)

    def is_holding(self, name):
        return name in self._held


def kept_open_by_plugin(group):
    """True while the socket is open although no worker process exists."""
    return (group.socket_manager.is_prepared()
            and not any(p.pid for p in group.processes.values()))


def remove_unix_socket_file(socket_config):
    """Remove a closed unix pool socket's file (supervisor leaves it behind).

    Only a socket file is removed: the path may have been reused since.
    Returns the removed path or None.
    """
    path = getattr(socket_config, 'path', None)
    if not path:
        return None
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return None
        os.unlink(path)
    except FileNotFoundError:
        return None
    return path
