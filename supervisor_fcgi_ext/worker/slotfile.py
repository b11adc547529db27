"""A worker's slot file: made whole, then renamed into place, in a pool
directory the plugin made (docs/scoreboard.rst, "Finding the slot")."""
import mmap
import os
import time

from supervisor_fcgi_ext.common.scoreboard import (
    MARKER, RECORD_SIZE, ScoreboardError, Slot, encode_slot, has_marker,
)

__all__ = ['create_slot']


def create_slot(directory, pid, threads, max_requests):
    """Create ``<directory>/<pid>.slot`` in state 'starting'; its mmap.

    Written whole under a temporary name, then renamed: a reader never sees
    a partial file.
    """
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not has_marker(dfd, os.stat(os.path.dirname(directory)).st_uid):
            raise ScoreboardError('%s was not made by the plugin (no %s of its user)'
                                  % (directory, MARKER))
        tmp = '%d.slot.tmp' % pid
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        mm = None
        try:
            slot = Slot(pid, time.time(), 'starting', threads=threads,
                        max_requests=max_requests)
            os.write(fd, encode_slot(slot))
            mm = mmap.mmap(fd, RECORD_SIZE)
            os.rename(tmp, '%d.slot' % pid, src_dir_fd=dfd, dst_dir_fd=dfd)
            return mm
        except BaseException:
            if mm is not None:
                mm.close()
            os.unlink(tmp, dir_fd=dfd)
            raise
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
