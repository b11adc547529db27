"""SIGIO from a pool's listener: a sign, per listener, that a connection came.

The kernel counts no connections per listener (TCP_INFO of a listener is its
queue and backlog only) and the netns' PassiveOpens moves with every listener
of the host, so on a host with traffic elsewhere it moves at every sample.
But a socket whose file has O_ASYNC and an owner signals the owner each time
it becomes readable, and a listener becomes readable when a connection is
queued on it (sock_def_readable -> sk_wake_async -> kill_fasync), even when
a worker takes the connection a microsecond later.  sockstats arms the
listener of a pool that holds no connection: while no SIGIO has come since a
dump that found none, none can be there and no dump is made.  The first
signal disarms every armed listener (a busy pool costs supervisord one signal,
not one per connection until the next sample), and so does a dump that finds
connections.

The flag and the owner belong to the listener's open file, which the workers
share: a worker that takes them for itself is left alone (``armed`` is then
False), and the signal goes to supervisord only, whose handler counts it.
"""
import fcntl
import os
import signal

__all__ = ['signals', 'arm', 'armed', 'disarm']

_count = [0]
_armed = set()   # fds armed: checked again before they are touched


def _on_sigio(signum, frame):
    _count[0] += 1
    while _armed:
        disarm(_armed.pop())


def signals():
    """How many SIGIO have come so far."""
    return _count[0]


def _handler():
    """Ours, installed before any listener is armed (SIGIO's default action
    ends the process); False where it cannot be (another handler, not the
    main thread)."""
    try:
        current = signal.getsignal(signal.SIGIO)
        if current is _on_sigio:
            return True
        if current not in (signal.SIG_DFL, None):
            return False
        signal.signal(signal.SIGIO, _on_sigio)
        return True
    except (ValueError, OSError):
        return False


def armed(fd):
    """Does the listener on ``fd`` signal us?"""
    try:
        return (signal.getsignal(signal.SIGIO) is _on_sigio
                and bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ASYNC)
                and fcntl.fcntl(fd, fcntl.F_GETOWN) == os.getpid())
    except (OSError, ValueError):
        return False


def arm(fd):
    """Ask the listener on ``fd`` for a SIGIO at each connection, unless its
    file's O_ASYNC is someone else's."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & os.O_ASYNC or not _handler():
            return
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        _armed.add(fd)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_ASYNC)
    except OSError:
        pass


def disarm(fd):
    """No more SIGIO from the listener on ``fd``, if we asked for them (the
    flag and the owner say so, whatever file the number is now)."""
    _armed.discard(fd)
    try:
        if armed(fd):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_ASYNC)
    except OSError:
        pass
