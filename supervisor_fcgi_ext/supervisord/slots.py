"""supervisord's side of the scoreboard: reading slots, the pool directories
and the sweep of stale slots.

supervisord reads the slots without mmap, locks or blocking calls: a hostile
or truncated file can only produce a ScoreboardError, never a SIGBUS, a hang
or another exception inside supervisord.
"""
import os
import re
import stat

from supervisor_fcgi_ext.common.scoreboard import (
    MARKER, RECORD_SIZE, SEQ_OFFSET, NoSlot, ScoreboardError, check_header,
    check_pool_name, decode_slot, has_marker, os_reason, slot_path)

__all__ = ['ensure_pool_dir', 'remove_pool_dir', 'open_slot', 'read_record', 'read_slot',
           'read_pool', 'harvest_slot',
           'StaleSweep', 'DIR_FLAGS']

SEQ_END = SEQ_OFFSET + 8
# Bounded retries of a torn read; a writer holds the seq odd for a few µs.
READ_RETRIES = 5
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
               | os.O_NOCTTY)
# A directory, never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MARKER_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Directory entries a sweep step looks at: ~1 ms; 200k entries of junk
# took one unbounded sweep 0.8-1.2 s of supervisord's loop.
SWEEP_BATCH = 1000
_SLOT_NAME = re.compile(r'^([1-9][0-9]{0,9})\.slot$')
_TMP_NAME = re.compile(r'^([1-9][0-9]{0,9})\.slot\.tmp$')


def ensure_pool_dir(base, pool, uid=None):
    """Make ``<base>/<pool>/`` mode 0700 owned by ``uid``; return its path.

    A directory is only ever changed or removed by the plugin if the plugin
    made it (it holds our MARKER): a pool-named directory that was there
    before, or a symlink, is refused and left exactly as it is.  Idempotent;
    fixes the mode and owner of our own.
    """
    check_pool_name(pool)
    path = os.path.join(base, pool)
    try:
        os.makedirs(base, 0o755, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
            made = True
        except FileExistsError:
            made = False
        try:
            fd = os.open(path, DIR_FLAGS)
        except OSError as exc:
            raise ScoreboardError('pool directory %s is not a directory: %s'
                                  % (path, os_reason(exc)))
        try:
            if made:
                os.close(os.open(MARKER, _MARKER_FLAGS, 0o400, dir_fd=fd))
            elif not _made_by_us(fd):
                raise ScoreboardError('pool directory %s was not made by the plugin: '
                                      'left as it is, no scoreboard' % path)
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


def _made_by_us(dfd):
    return has_marker(dfd, os.geteuid())


def remove_pool_dir(base, pool):
    """Remove a removed pool's directory if we made it: its slot files, our
    marker, then the directory if that left it empty.  Returns None when it
    is gone (or was never there), else why it was left."""
    path = os.path.join(base, pool)
    try:
        check_pool_name(pool)
        dfd = os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        return None
    except (ScoreboardError, OSError) as exc:
        return 'cannot open %s: %s' % (path, exc)
    try:
        if not _made_by_us(dfd):
            return '%s was not made by the plugin' % path
        with os.scandir(dfd) as entries:
            names = [e.name for _, e in zip(range(SWEEP_BATCH + 1), entries)]
        if len(names) > SWEEP_BATCH:
            return '%s holds more than %d entries' % (path, SWEEP_BATCH)
        for name in names:
            if _SLOT_NAME.match(name) or _TMP_NAME.match(name):
                _unlink(name, dfd)
        _unlink(MARKER, dfd)
        try:
            os.rmdir(path)
        except OSError as exc:
            return '%s holds files the plugin did not make (%s)' % (path, os_reason(exc))
        return None
    except OSError as exc:
        return 'cannot empty %s: %s' % (path, os_reason(exc))
    finally:
        os.close(dfd)


def _unlink(name, dfd):
    try:
        os.unlink(name, dir_fd=dfd)
        return True
    except OSError:
        return False


def open_slot(path):
    """(fd, pid) of the slot file at ``path``: never blocks, never follows a
    symlink; ScoreboardError (NoSlot when there is none) otherwise."""
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
    return fd, int(match.group(1))


def read_record(fd, pid, now=None, regular=False):
    """(record bytes, Slot) of an open slot file, never mmapped (``regular``:
    the caller's fstat found a regular file already).

    Seqlock: the counter is read before and after the record (three preads, so
    no assumption on the order a copy runs in); an odd or changed counter is
    retried READ_RETRIES times, then refused.
    """
    try:
        if not regular and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ScoreboardError('slot is not a regular file')
        for attempt in range(READ_RETRIES):
            before = os.pread(fd, 8, SEQ_OFFSET)
            data = os.pread(fd, RECORD_SIZE, 0)
            after = os.pread(fd, 8, SEQ_OFFSET)
            check_header(data, pid)     # a short file: truncated, or another version
            if before == after == data[SEQ_OFFSET:SEQ_END] and not before[0] & 1:
                return data, decode_slot(data, now, pid)
            os.sched_yield()
        raise ScoreboardError('slot still being written after %d reads' % READ_RETRIES)
    except OSError as exc:
        raise ScoreboardError('cannot read slot: %s' % os_reason(exc))


def read_slot(path, now=None):
    """Read one slot file (open_slot, read_record, close)."""
    fd, pid = open_slot(path)
    try:
        return read_record(fd, pid, now)[1]
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
    """The final read of an exited worker's slot, then unlink it if the pool
    directory is ours; never raises."""
    try:
        path = slot_path(base, pool, pid)
    except ScoreboardError:
        return None
    try:
        slot = read_slot(path)
    except ScoreboardError:
        slot = None
    dfd = _open_ours(os.path.dirname(path))
    if dfd is not None:
        _unlink(os.path.basename(path), dfd)
        os.close(dfd)
    return slot


def _open_ours(path):
    """An fd of the pool directory at `path` if the plugin made it, else None."""
    try:
        dfd = os.open(path, DIR_FLAGS)
    except OSError:
        return None
    if _made_by_us(dfd):
        return dfd
    os.close(dfd)
    return None


class StaleSweep:
    """Unlink the slots of one pool's pids that are gone, a bounded number of
    directory entries per `step` (supervisord's loop must not stall on a
    directory that a pool's user filled), resuming where the last step ended.

    Only slot files (``<pid>.slot``, ``<pid>.slot.tmp``) of pids not live are
    removed; anything else is left, and named once in the log.  The open
    directory is held across steps: `close` it before supervisord closes fds.
    """

    def __init__(self, base, pool, logger, batch=SWEEP_BATCH):
        self.path = os.path.join(base, pool)
        self.pool = pool
        self.logger = logger
        self.batch = batch
        self._dfd = self._entries = None
        self._noted = False

    @property
    def running(self):
        return self._entries is not None

    def step(self, live_pids):
        """Look at up to `batch` entries; return the pids whose slot went."""
        if self._entries is None and not self._start():
            return []
        live = set(live_pids)
        removed = []
        try:
            for _ in range(self.batch):
                entry = next(self._entries, None)
                if entry is None:
                    self._finish()
                    break
                match = _SLOT_NAME.match(entry.name) or _TMP_NAME.match(entry.name)
                if match is None:
                    if entry.name != MARKER:
                        self._note(entry.name)
                elif int(match.group(1)) not in live and _unlink(entry.name, self._dfd) \
                        and entry.name.endswith('.slot'):
                    removed.append(int(match.group(1)))
        except OSError as exc:
            self.logger.warn('fcgi: sweeping %s stopped: %s' % (self.path, os_reason(exc)))
            self.close()
        return sorted(removed)

    def _start(self):
        """Only a directory the plugin made is swept."""
        try:
            check_pool_name(self.pool)
            self._dfd = _open_ours(self.path)
            if self._dfd is None:
                return False
            self._entries = os.scandir(self._dfd)
        except (ScoreboardError, OSError):
            self.close()
            return False
        return True

    def _finish(self):
        self.close()

    def _note(self, name):
        if not self._noted:
            self._noted = True
            self.logger.warn('fcgi: %s holds entries that are not slots (%r, ...); the '
                             'sweep leaves them (logged once)' % (self.path, name))

    def close(self):
        if self._entries is not None:
            self._entries.close()
        if self._dfd is not None:
            os.close(self._dfd)
        self._dfd = self._entries = None
