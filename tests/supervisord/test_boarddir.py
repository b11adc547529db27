"""The scoreboard's top directory: made exclusively, told from an orphan by
its lock (through a daemonizing fork too), never adopted from another user,
and a configured one never changed.  Real files, real processes, real user
``nobody``, in temp roots the tests make (never the real /dev/shm)."""
import fcntl
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

from supervisor_fcgi_ext.supervisord import boarddir
from supervisor_fcgi_ext.supervisord.boarddir import (AUTO_PREFIX, LOCK_NAME, AutoBoard,
                                                      prepare_configured, remove_orphans)
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir

root_only = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (chown, user nobody)')


@pytest.fixture
def shm():
    """A root like /dev/shm (mode 1777) that user nobody can reach."""
    path = tempfile.mkdtemp(prefix='sfe-shm-', dir='/tmp')
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody(*argv):
    nobody = pwd.getpwnam('nobody')
    return subprocess.run(
        argv, cwd='/', capture_output=True, text=True,
        preexec_fn=lambda: (os.setgroups([]), os.setgid(nobody.pw_gid),
                            os.setuid(nobody.pw_uid)))


def board_process(root, fork=False):
    """A process that makes an AutoBoard under root (then, with fork, forks
    and lets its parent exit, as supervisord daemonizing does), prints the
    path and sleeps: kill it with SIGKILL to make an orphan."""
    code = textwrap.dedent('''
        import os, sys, time
        from supervisor_fcgi_ext.supervisord.boarddir import AutoBoard
        board = AutoBoard(sys.argv[1])
        if sys.argv[2] == 'fork':
            r, w = os.pipe()
            if os.fork():
                os.read(r, 1)      # the daemon recorded its pid
                os._exit(0)
            board.record_owner()
            os.write(w, b'x')
        print(board.path, os.getpid(), flush=True)
        time.sleep(60)
    ''')
    proc = subprocess.Popen([sys.executable, '-c', code, root, 'fork' if fork else ''],
                            stdout=subprocess.PIPE, text=True)
    path, pid = proc.stdout.readline().split()
    return proc, path, int(pid)


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class TestAutoBoard:
    def test_a_random_name_made_by_us_mode_0711_with_a_held_lock(self, shm):
        board, other = AutoBoard(shm), AutoBoard(shm)
        assert board.path != other.path
        assert os.path.basename(board.path).startswith(AUTO_PREFIX)
        st = os.lstat(board.path)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o711
        assert st.st_uid == os.geteuid()
        lock = os.path.join(board.path, LOCK_NAME)
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        assert open(lock).read() == '%d\n' % os.getpid()
        with open(lock) as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)

    def test_the_lock_is_taken_again_after_a_reload_closed_its_fd(self, shm):
        board = AutoBoard(shm)
        os.close(board.lock_fd)               # supervisord's cleanup_fds
        other = os.open(__file__, os.O_RDONLY)
        reused = os.dup2(other, board.lock_fd)    # another file gets the number
        os.close(other)
        try:
            assert reused == board.lock_fd and not board.holds_lock()
            board.relock()
            assert board.holds_lock() and board.lock_fd != reused
            with open(os.path.join(board.path, LOCK_NAME)) as f, \
                    pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(reused)

    def test_auto_board_is_one_per_process_and_removed_at_exit_by_its_owner(self, shm):
        board = boarddir.auto_board(shm)
        try:
            assert boarddir.auto_board(shm) is board
            shutil.rmtree(board.path)                 # removed behind its back
            fresh = boarddir.auto_board(shm)
            assert fresh is not board and os.path.isdir(fresh.path)
            board = fresh
            board.owner = -1          # as in a forked child: not its to remove
            board.remove()
            assert os.path.isdir(board.path)
            board.record_owner()
            board.remove()
            assert not os.path.exists(board.path)
        finally:
            boarddir._auto.pop(shm, None)


class TestOrphans:
    def test_a_daemonized_owner_keeps_its_directory(self, shm):
        # the pid that made it exits right after the fork; the lock lives on
        proc, path, pid = board_process(shm, fork=True)
        try:
            assert proc.wait(5) == 0 and pid != proc.pid
            assert remove_orphans(shm) == [] and os.path.isdir(path)
        finally:
            kill(pid)

    def test_a_killed_owner_leaves_an_orphan_that_the_next_one_removes(self, shm):
        proc, path, pid = board_process(shm)
        proc.kill()
        proc.wait()
        assert remove_orphans(shm) == [path] and not os.path.exists(path)

    def test_a_free_lock_with_a_live_pid_is_kept(self, shm):
        # a reload closed the lock's fd and has not taken it again yet
        board = AutoBoard(shm)
        os.close(board.lock_fd)
        assert remove_orphans(shm) == [] and os.path.isdir(board.path)

    @root_only
    def test_only_our_own_directories_are_ever_removed(self, shm):
        elsewhere = tempfile.mkdtemp(prefix='sfe-elsewhere-', dir='/tmp')
        try:
            proc, orphan, pid = board_process(elsewhere)
            proc.kill()
            proc.wait()
            # an orphan, but reached through symlinks (nobody's, ours): never followed
            for owner, name in (('nobody', 'link1'), ('root', 'link2')):
                link = os.path.join(shm, AUTO_PREFIX + name)
                if owner == 'nobody':
                    assert as_nobody('ln', '-s', orphan, link).returncode == 0
                else:
                    os.symlink(orphan, link)
            # nobody's look-alike: a lock file with a dead pid
            name = os.path.join(shm, AUTO_PREFIX + '99999999')
            assert as_nobody('mkdir', name).returncode == 0
            assert as_nobody('sh', '-c', 'echo 99999999 > %s/%s' % (name, LOCK_NAME)) \
                .returncode == 0
            assert remove_orphans(shm) == []
            assert os.path.isdir(orphan) and os.path.isdir(name)
            assert sorted(os.listdir(shm)) == sorted(
                AUTO_PREFIX + n for n in ('link1', 'link2', '99999999'))
            assert remove_orphans(elsewhere) == [orphan]
        finally:
            shutil.rmtree(elsewhere, ignore_errors=True)


@root_only
class TestNobodyCannotForge:
    """The old name (prefix + pid) was predictable: made first by another user,
    it was adopted, chmodded, and its owner could write a root pool's slot."""

    def test_pre_created_names_and_symlinks_are_never_adopted(self, shm):
        target = tempfile.mkdtemp(prefix='sfe-target-', dir='/tmp')
        try:
            os.chmod(target, 0o755)
            with open(os.path.join(target, 'keep.txt'), 'w') as f:
                f.write('precious')
            for name in ('%s%d' % (AUTO_PREFIX, os.getpid()), AUTO_PREFIX + 'x'):
                assert as_nobody('mkdir', '-m', '0777', os.path.join(shm, name)).returncode == 0
            assert as_nobody('ln', '-s', target,
                             os.path.join(shm, AUTO_PREFIX + 'abcdefgh')).returncode == 0
            board = boarddir.auto_board(shm)
            try:
                ours = os.lstat(board.path)
                assert ours.st_uid == 0 and stat.S_ISDIR(ours.st_mode)
                assert os.path.dirname(board.path) == shm
                pool = ensure_pool_dir(board.path, 'app')         # a root pool
                slot = os.path.join(pool, '%d.slot' % os.getpid())
                forged = as_nobody('sh', '-c', 'echo forged > %s' % slot)
                assert forged.returncode != 0 and 'Permission denied' in forged.stderr
                assert not os.path.exists(slot)
                for attempt in (['mkdir', os.path.join(board.path, 'evil')],
                                ['ln', '-s', target, os.path.join(board.path, 'other')]):
                    assert as_nobody(*attempt).returncode != 0
                assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
                assert os.listdir(target) == ['keep.txt']
                for name in ('%s%d' % (AUTO_PREFIX, os.getpid()), AUTO_PREFIX + 'x'):
                    st = os.stat(os.path.join(shm, name))
                    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (
                        pwd.getpwnam('nobody').pw_uid, 0o777)
            finally:
                boarddir._auto.pop(shm, None)
        finally:
            shutil.rmtree(target, ignore_errors=True)


class TestConfiguredDir:
    def test_a_missing_directory_is_made_0711(self, tmp_path):
        path = str(tmp_path / 'a' / 'board')
        old = os.umask(0o077)
        try:
            assert prepare_configured(path) == path
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o711

    @pytest.mark.parametrize('mode', [0o1777, 0o755, 0o700])
    def test_an_existing_directory_is_used_as_it_is(self, tmp_path, mode):
        path = tmp_path / 'board'
        path.mkdir()
        os.chmod(path, mode)
        (path / 'data').write_text('theirs')
        prepare_configured(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        assert os.listdir(path) == ['data']

    def _refused(self, path):
        with pytest.raises(ValueError) as info:
            prepare_configured(str(path))
        line = str(info.value)
        assert line.startswith("[rpcinterface:fcgi] scoreboard_dir = %r is refused: "
                               % str(path)) and '\n' not in line
        assert line.endswith("(allowed: auto, none, or an absolute path (not /, no . or .. "
                             "part) to a directory that is not a symlink, is owned by "
                             "supervisord's user and is not world-writable unless sticky)")
        return line

    def test_a_symlink_is_refused_and_its_target_untouched(self, tmp_path):
        (tmp_path / 'target').mkdir()
        os.chmod(tmp_path / 'target', 0o755)
        os.symlink(tmp_path / 'target', tmp_path / 'link')
        assert ': it is a symlink (' in self._refused(tmp_path / 'link')
        assert stat.S_IMODE(os.stat(tmp_path / 'target').st_mode) == 0o755

    def test_world_writable_without_sticky_is_refused(self, tmp_path):
        (tmp_path / 'open').mkdir()
        os.chmod(tmp_path / 'open', 0o777)
        assert 'anybody can write in it (mode 777, no sticky bit)' in \
            self._refused(tmp_path / 'open')
        assert stat.S_IMODE(os.stat(tmp_path / 'open').st_mode) == 0o777

    def test_a_file_is_refused(self, tmp_path):
        (tmp_path / 'file').write_text('')
        assert 'Not a directory' in self._refused(tmp_path / 'file')

    @root_only
    def test_a_directory_of_another_user_is_refused(self, tmp_path):
        (tmp_path / 'theirs').mkdir()
        os.chown(tmp_path / 'theirs', pwd.getpwnam('nobody').pw_uid, -1)
        assert 'it is owned by uid %d, not 0' % pwd.getpwnam('nobody').pw_uid in \
            self._refused(tmp_path / 'theirs')
