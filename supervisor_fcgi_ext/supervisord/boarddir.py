"""The scoreboard's top directory: the automatic one, or the one configured.

`auto` is a directory of this supervisord's own on tmpfs.  Its name is made
exclusively and at random (mkdtemp): a name another user could guess and
make first would be adopted, with its owner's slots forged into our pools.
Its owner is told from an orphan by a lock, not by a pid in its name: the
pid of a supervisord that daemonizes is gone right after start.  The lock is
an flock on `LOCK_NAME` inside, taken before the fork and inherited through
it; the file also holds the pid of the supervisord running now, which keeps
the directory while a reload has closed the lock's fd and not yet taken it
again.  An orphan (a supervisord killed with SIGKILL never ran its exit
handler) is a directory of ours, not a symlink, with a lock free and a dead
pid; the next supervisord with the plugin removes it.

A configured directory must exist or be makeable, and be one nobody else
can put entries in: the plugin never changes its mode and only ever changes
or removes what it made inside it (see slots.ensure_pool_dir).
"""

import atexit
import fcntl
import os
import shutil
import stat
import tempfile

from supervisor_fcgi_ext.common.scoreboard import os_reason
from supervisor_fcgi_ext.supervisord.settings import SCOREBOARD_DIR_RULE
from supervisor_fcgi_ext.supervisord.slots import DIR_FLAGS

__all__ = ['AUTO_PREFIX', 'LOCK_NAME', 'AutoBoard', 'auto_board', 'default_root',
           'prepare_configured', 'remove_orphans']

AUTO_PREFIX = 'supervisor-fcgi-'
LOCK_NAME = '.owner'
# A fork keeps the lock (supervisord's daemonizing fork among them); an exec
# drops it, so no worker holds it.
_LOCK_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


def default_root():
    """tmpfs when there is one: a slot write is then a store to memory."""
    return '/dev/shm' if os.access('/dev/shm', os.W_OK) else tempfile.gettempdir()


class AutoBoard:
    """A directory made by us under `root`, locked while we run."""

    def __init__(self, root):
        self.root = root
        self.path = tempfile.mkdtemp(prefix=AUTO_PREFIX, dir=root)
        dfd = os.open(self.path, DIR_FLAGS)
        try:
            os.fchmod(dfd, 0o711)   # workers of other users reach their pool dir
            fd = os.open(LOCK_NAME, _LOCK_FLAGS | os.O_CREAT | os.O_EXCL, 0o600,
                         dir_fd=dfd)
        finally:
            os.close(dfd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock(fd)
        atexit.register(self.remove)

    def _lock(self, fd):
        st = os.fstat(fd)
        self.lock_fd, self._lock_id = fd, (st.st_dev, st.st_ino)
        self.record_owner()

    def _lock_stat(self):
        """Our lock fd's stat, or None once the number is not ours: a regular
        file's inode is unique, so a reused number cannot pass for it."""
        try:
            st = os.fstat(self.lock_fd)
        except OSError:
            return None
        return st if (st.st_dev, st.st_ino) == self._lock_id else None

    def holds_lock(self):
        """True while the lock fd is ours and its file still there."""
        st = self._lock_stat()
        return st is not None and st.st_nlink > 0

    def relock(self):
        """Take the lock again after a reload closed its fd (cleanup_fds);
        OSError when the directory was removed behind our back."""
        if self.holds_lock():
            return
        if self._lock_stat() is not None:
            os.close(self.lock_fd)        # ours, but its file was removed
        dfd = os.open(self.path, DIR_FLAGS)
        try:
            fd = os.open(LOCK_NAME, _LOCK_FLAGS, dir_fd=dfd)
        finally:
            os.close(dfd)
        fcntl.flock(fd, fcntl.LOCK_EX)   # another's orphan check holds it for µs
        self._lock(fd)

    def record_owner(self):
        """Write our pid (again after daemonizing: the pid changed)."""
        self.owner = os.getpid()
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, b'%d\n' % self.owner, 0)

    def remove(self):
        """At exit of the supervisord that owns it (not of a forked child)."""
        if os.getpid() == self.owner:
            shutil.rmtree(self.path, True)


_auto = {}   # root: the AutoBoard of this process


def auto_board(root=None):
    """This process's automatic directory, made once (a reload keeps it,
    and the lock is taken again); orphans of others are removed first."""
    root = default_root() if root is None else root
    board = _auto.pop(root, None)
    if board is not None:
        try:
            board.relock()
        except OSError:      # removed behind our back: a new one
            board = None
    if board is None:
        remove_orphans(root)
        board = AutoBoard(root)
    _auto[root] = board
    return board


def remove_orphans(root):
    """Remove the automatic directories of supervisords that are gone.

    Only a directory (not a symlink) owned by our user with our lock file in
    it counts, and only while nobody holds its lock and its pid is dead;
    anything else under `root` is left alone.  Returns the paths removed.
    """
    removed = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(AUTO_PREFIX)]
    except OSError:
        return removed
    mine = {b.path for b in _auto.values()}
    for name in names:
        path = os.path.join(root, name)
        if path not in mine and _is_orphan(path):
            shutil.rmtree(path, True)
            removed.append(path)
    return removed


def _is_orphan(path):
    try:
        dfd = os.open(path, DIR_FLAGS)
    except OSError:
        return False   # a symlink, not a directory, gone
    try:
        if os.fstat(dfd).st_uid != os.geteuid():
            return False
        fd = os.open(LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False   # its supervisord holds it
        pid = _parse_pid(os.pread(fd, 32, 0))
        # no pid yet: its maker is between creating and writing it
        return pid is not None and not _alive(pid)
    finally:
        os.close(fd)


def _parse_pid(data):
    text = data.decode('ascii', 'replace').strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def prepare_configured(path):
    """Make `path` if it is missing, else check it is fit: a directory, not a
    symlink, owned by supervisord's user, not writable by all unless sticky.
    Never changes an existing directory.  ValueError: the one line."""
    made = False
    try:
        os.makedirs(path, 0o711)
        made = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise _refused(path, os_reason(exc))
    try:
        dfd = os.open(path, DIR_FLAGS)
    except OSError as exc:
        st = _lstat(path)
        reason = ('it is a symlink' if st is not None and stat.S_ISLNK(st.st_mode)
                  else os_reason(exc))
        raise _refused(path, reason)
    try:
        if made:
            os.fchmod(dfd, 0o711)   # whatever the umask: workers reach their dir
        st = os.fstat(dfd)
    finally:
        os.close(dfd)
    if st.st_uid != os.geteuid():
        raise _refused(path, 'it is owned by uid %d, not %d' % (st.st_uid, os.geteuid()))
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise _refused(path, 'anybody can write in it (mode %o, no sticky bit)'
                       % stat.S_IMODE(st.st_mode))
    return path


def _lstat(path):
    try:
        return os.lstat(path)
    except OSError:
        return None


def _refused(path, reason):
    return ValueError('[rpcinterface:fcgi] scoreboard_dir = %r is refused: %s '
                      '(allowed: %s)' % (path, reason, SCOREBOARD_DIR_RULE))
