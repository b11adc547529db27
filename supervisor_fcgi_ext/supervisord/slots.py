"""supervisord's side of the scoreboard: reading slots, and the pool directories.

supervisord reads the slots without mmap, locks or blocking calls: a hostile
or truncated file can only produce a ScoreboardError, never a SIGBUS, a hang
or another exception inside supervisord.
"""
import os
import re
import stat

from supervisor_fcgi_ext.common.scoreboard import (
    RECORD_SIZE, SEQ_OFFSET, NoSlot, ScoreboardError, check_header, check_pool_name,
    decode_slot, os_reason, slot_path)

__all__ = ['ensure_pool_dir', 'read_slot', 'read_pool', 'harvest_slot', 'remove_stale']

_SEQ_END = SEQ_OFFSET + 8
# Bounded retries of a torn read; a writer holds the seq odd for a few µs.
READ_RETRIES = 5
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
               | os.O_NOCTTY)
_SLOT_NAME = re.compile(r'^([1-9][0-9]{0,9})\.slot$')
_TMP_NAME = re.compile(r'^([1-9][0-9]{0,9})\.slot\.tmp$')


def ensure_pool_dir(base, pool, uid=None):
    """Make ``<base>/<pool>/`` mode 0700 owned by ``uid``; return its path.

    Idempotent; fixes a wrong mode or owner; refuses a symlink or non-directory.
    """
    check_pool_name(pool)
    path = os.path.join(base, pool)
    try:
        os.makedirs(base, 0o755, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ScoreboardError('pool directory %s is not a directory: %s'
                                  % (path, os_reason(exc)))
        try:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
            if uid is not None and st.st_uid != uid:
                os.fchown(fd, uid, -1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ScoreboardError('cannot prepare pool directory %s: %s' % (path, os_reason(exc)))
    return path


def read_slot(path, now=None):
    """Read one slot file: never blocks, never follows a symlink, never mmaps.

    Seqlock: the counter is read before and after the record (three preads, so
    no assumption on the order a copy runs in); an odd or changed counter is
    retried READ_RETRIES times, then refused.
    """
    try:
        name = os.path.basename(path)
        match = _SLOT_NAME.match(name)
        if match is None:
            raise ScoreboardError('not a slot file name: %r' % (name,))
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise NoSlot('no slot')
    except OSError as exc:
        raise ScoreboardError('cannot open slot: %s' % os_reason(exc))
    except (TypeError, ValueError) as exc:     # not a path, a NUL in it
        raise ScoreboardError('cannot open slot: %s' % exc)
    pid = int(match.group(1))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ScoreboardError('slot is not a regular file')
        if st.st_size < RECORD_SIZE:
            raise ScoreboardError('truncated slot (%d of %d bytes)' % (st.st_size, RECORD_SIZE))
        for attempt in range(READ_RETRIES):
            before = os.pread(fd, 8, SEQ_OFFSET)
            data = os.pread(fd, RECORD_SIZE, 0)
            after = os.pread(fd, 8, SEQ_OFFSET)
            check_header(data, pid)
            if before == after == data[SEQ_OFFSET:_SEQ_END] and not before[0] & 1:
                return decode_slot(data, now, pid)
            os.sched_yield()
        raise ScoreboardError('slot still being written after %d reads' % READ_RETRIES)
    except OSError as exc:
        raise ScoreboardError('cannot read slot: %s' % os_reason(exc))
    finally:
        os.close(fd)


def read_pool(base, pool, pids):
    """{pid: Slot or ScoreboardError} for every pid asked; one open per pid."""
    result = {}
    for pid in pids:
        try:
            result[pid] = read_slot(slot_path(base, pool, pid))
        except ScoreboardError as exc:
            result[pid] = exc
    return result


def harvest_slot(base, pool, pid):
    """The final read of an exited worker's slot, then unlink it; never raises."""
    try:
        path = slot_path(base, pool, pid)
    except ScoreboardError:
        return None
    try:
        slot = read_slot(path)
    except ScoreboardError:
        slot = None
    try:
        os.unlink(path)
    except OSError:
        pass
    return slot


def remove_stale(base, pool, live_pids):
    """Unlink slots of pids not in ``live_pids`` and junk files; never raises.

    A live worker's ``<pid>.slot.tmp`` is kept: it is being created.
    Returns the pids whose slots were removed, sorted.
    """
    live = set(live_pids)
    removed = []
    try:
        check_pool_name(pool)
        dfd = os.open(os.path.join(base, pool),
                      os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (ScoreboardError, OSError):
        return removed
    try:
        for name in os.listdir(dfd):
            match = _SLOT_NAME.match(name) or _TMP_NAME.match(name)
            pid = int(match.group(1)) if match else None
            if pid in live:
                continue
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                continue
            if match and name.endswith('.slot'):
                removed.append(pid)
    except OSError:
        pass
    finally:
        os.close(dfd)
    return sorted(removed)
