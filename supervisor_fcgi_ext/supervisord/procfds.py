"""Which sockets a process holds, from /proc/PID/fd: the walk supervisord
makes for workers that write no slot, bounded so that a process holding
many fds costs one fstat, not a walk (Linux >= 6.2; a bounded walk before)."""
import os

from supervisor_fcgi_ext.supervisord.netlink import LimitReached

__all__ = ['socket_inodes']


def socket_inodes(pid, limit=None):
    """Return the inodes of the sockets process pid has open.

    A process that has exited (or that we may not inspect) has none: workers
    come and go at any moment, so this is not an error.  With ``limit``, a
    process holding more fds than that raises LimitReached instead of being
    walked (Linux >= 6.2 tells the count without a walk).
    """
    try:
        dir_fd = os.open('/proc/%d/fd' % pid, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return set()
    inodes = set()
    try:
        if limit is not None and os.fstat(dir_fd).st_size > limit:
            raise LimitReached('pid %d has more than %d fds' % (pid, limit))
        with os.scandir(dir_fd) as entries:
            for count, entry in enumerate(entries):
                if limit is not None and count >= limit:
                    raise LimitReached('pid %d has more than %d fds' % (pid, limit))
                try:
                    link = os.readlink(entry.name, dir_fd=dir_fd)
                except OSError:  # fd closed since listdir
                    continue
                if link.startswith('socket:['):
                    inodes.add(int(link[8:-1]))
    except OSError:  # the process exited during listdir
        return set()
    finally:
        os.close(dir_fd)
    return inodes
