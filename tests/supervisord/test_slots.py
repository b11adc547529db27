"""supervisord's reader: pool directories, hostile and torn slot files, the
harvest of an exited worker's slot and the sweep of stale ones, and that
the plugin changes or removes only what it made."""
from __future__ import annotations

import os
import stat
import struct
import threading
import time

import pytest

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.common.scoreboard import (
    MARKER, RECORD_SIZE, ScoreboardError, Slot, encode_slot, slot_path,
)
from supervisor_fcgi_ext.supervisord.slots import (
    StaleSweep, ensure_pool_dir, harvest_slot, read_pool, read_slot, remove_pool_dir,
)
from supervisor.tests.base import DummyLogger

from supervisor_fcgi_ext.worker.slotwriter import SlotWriter
from slotfactory import PID, make_slot


def write_file(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def read_in_thread(path, timeout=2.0):
    """read_slot(path) in a thread: a blocking read fails the test instead of hanging it."""
    result = []
    thread = threading.Thread(target=lambda: result.append(_try_read(path)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), 'read_slot blocked on %s' % path
    return result[0]


def _try_read(path):
    try:
        return read_slot(path)
    except ScoreboardError as exc:
        return exc
    except BaseException as exc:   # reported by the test, not lost in the thread
        return exc


class TestPoolDir:
    def test_created_0700_idempotent_and_mode_fixed(self, tmp_path):
        base = str(tmp_path / 'board')
        path = ensure_pool_dir(base, 'web')
        assert path == os.path.join(base, 'web')
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        os.chmod(path, 0o777)
        assert ensure_pool_dir(base, 'web') == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700

    @pytest.mark.skipif(os.geteuid() != 0, reason='chown needs root')
    def test_owner_is_set_and_fixed(self, tmp_path):
        path = ensure_pool_dir(str(tmp_path), 'web', uid=65534)
        assert os.stat(path).st_uid == 65534
        os.chown(path, 0, -1)
        ensure_pool_dir(str(tmp_path), 'web', uid=65534)
        assert os.stat(path).st_uid == 65534

    def test_symlink_and_file_are_refused(self, tmp_path):
        os.mkdir(tmp_path / 'elsewhere', 0o755)
        os.chmod(tmp_path / 'elsewhere', 0o755)
        os.symlink(tmp_path / 'elsewhere', tmp_path / 'linked')
        write_file(tmp_path / 'afile', b'')
        for name in ('linked', 'afile'):
            with pytest.raises(ScoreboardError, match='not a directory'):
                ensure_pool_dir(str(tmp_path), name)
        assert stat.S_IMODE(os.stat(tmp_path / 'elsewhere').st_mode) == 0o755

    @pytest.mark.parametrize('pool', ['', '.', '..', 'a/b', 'x\0y', 'p' * 300, None])
    def test_bad_pool_names_are_refused(self, tmp_path, pool):
        with pytest.raises(ScoreboardError, match='bad pool name'):
            ensure_pool_dir(str(tmp_path), pool)
        with pytest.raises(ScoreboardError, match='bad pool name'):
            slot_path(str(tmp_path), pool, 1)

    def test_slot_path(self):
        assert slot_path('/b', 'web', 12) == '/b/web/12.slot'
        for pid in (0, -1, '12', 1.5):
            with pytest.raises(ScoreboardError, match='bad pid'):
                slot_path('/b', 'web', pid)


class TestReader:
    def test_missing_slot(self, pool_dir):
        with pytest.raises(ScoreboardError) as info:
            read_slot(os.path.join(pool_dir, '77.slot'))
        assert isinstance(info.value, scoreboard.NoSlot) and str(info.value) == 'no slot'

    def test_bad_name_or_path(self, pool_dir):
        with pytest.raises(ScoreboardError, match='not a slot file name'):
            read_slot(os.path.join(pool_dir, 'x.slot'))
        for path in (pool_dir + '\0/1.slot', None, b'/x/1.slot'):
            with pytest.raises(ScoreboardError):
                read_slot(path)

    @pytest.mark.parametrize('data, reason', [
        (b'', 'truncated'),
        (b'\0' * 100, 'truncated'),
        (os.urandom(RECORD_SIZE), 'bad magic'),
        (encode_slot(make_slot())[:RECORD_SIZE - 1], 'truncated'),
        (encode_slot(make_slot(pid=999)), 'belongs to pid 999'),
        (b'SVFCGISB' + struct.pack('<HH', 1, 512) + bytes(500), 'version 1'),
        # a worker of the previous release: refused by its version, not as truncated
        (b'SVFCGISB' + struct.pack('<HHIQ', 2, 512, PID, 0) + bytes(488),
         'unsupported slot format version 2'),
    ])
    def test_bad_files(self, pool_dir, data, reason):
        path = slot_path(os.path.dirname(pool_dir), 'pool', PID)
        write_file(path, data)
        result = read_in_thread(path)
        assert isinstance(result, ScoreboardError) and reason in str(result)

    def test_fifo_directory_and_symlink_are_not_followed_or_blocked_on(self, pool_dir):
        good = os.path.join(pool_dir, '1.slot')
        write_file(good, encode_slot(make_slot(pid=1)))
        fifo, directory, link = (os.path.join(pool_dir, '%d.slot' % n) for n in (2, 3, 4))
        os.mkfifo(fifo)
        os.mkdir(directory)
        os.symlink(good, link)
        for path, reason in ((fifo, 'not a regular file'),
                             (directory, 'not a regular file'),
                             (link, 'cannot open slot')):
            result = read_in_thread(path)
            assert isinstance(result, ScoreboardError) and reason in str(result), result

    def test_huge_file_is_read_up_to_the_record(self, pool_dir):
        path = os.path.join(pool_dir, '%d.slot' % PID)
        write_file(path, encode_slot(make_slot()) + os.urandom(4 << 20))
        assert read_slot(path) == make_slot()

    def test_torn_write_is_refused_after_bounded_retries(self, pool_dir):
        path = os.path.join(pool_dir, '%d.slot' % PID)
        data = encode_slot(make_slot())
        write_file(path, data[:16] + struct.pack('<Q', 5) + data[24:])
        began = time.monotonic()
        with pytest.raises(ScoreboardError, match='still being written after 5 reads'):
            read_slot(path)
        assert time.monotonic() - began < 0.5

    def test_read_pool_answers_every_pid(self, pool_dir):
        base = os.path.dirname(pool_dir)
        SlotWriter(pool_dir, pid=11)
        write_file(slot_path(base, 'pool', 12), b'junk')
        result = read_pool(base, 'pool', [11, 12, 13])
        assert isinstance(result[11], Slot) and result[11].pid == 11
        assert 'truncated' in str(result[12])
        assert str(result[13]) == 'no slot'
        assert all(isinstance(v, ScoreboardError) for v in read_pool(base, '..', [1]).values())


class TestHarvestAndStale:
    def test_harvest_reads_then_unlinks_and_never_raises(self, pool_dir):
        base = os.path.dirname(pool_dir)
        writer = SlotWriter(pool_dir, pid=PID)
        writer.request_started({'REQUEST_URI': '/'})
        slot = harvest_slot(base, 'pool', PID)
        assert slot.requests == 1 and not os.path.exists(writer.path)
        assert harvest_slot(base, 'pool', PID) is None
        write_file(slot_path(base, 'pool', 5), b'garbage')
        assert harvest_slot(base, 'pool', 5) is None
        assert not os.path.exists(slot_path(base, 'pool', 5))
        assert harvest_slot(base, '..', 5) is None
        assert harvest_slot(base, 'pool', -3) is None

    def test_sweep_removes_slots_of_gone_pids_only(self, pool_dir):
        base = os.path.dirname(pool_dir)
        for pid in (10, 11, 12):
            SlotWriter(pool_dir, pid=pid)
        for name in ('11.slot.tmp', '13.slot.tmp', 'junk', '.hidden'):
            write_file(os.path.join(pool_dir, name), b'x')
        os.mkdir(os.path.join(pool_dir, 'subdir'))
        logger = DummyLogger()
        sweep = StaleSweep(base, 'pool', logger)
        assert sweep.step([11, 99]) == [10, 12] and not sweep.running
        # what is not a slot is not ours to remove: named once in the log
        assert sorted(os.listdir(pool_dir)) == sorted(
            [MARKER, '11.slot', '11.slot.tmp', 'junk', '.hidden', 'subdir'])
        assert sweep.step([11]) == []
        assert len([line for line in logger.data if 'not slots' in line]) == 1
        assert logger.data[0].startswith('fcgi: %s holds entries that are not slots ('
                                         % pool_dir)
        assert logger.data[0].endswith(', ...); the sweep leaves them (logged once)')
        assert StaleSweep(base, 'missing', logger).step([]) == []
        assert StaleSweep(base, '../..', logger).step([]) == []

    def test_sweep_is_bounded_and_resumes(self, pool_dir):
        base = os.path.dirname(pool_dir)
        for pid in range(1, 26):
            write_file(os.path.join(pool_dir, '%d.slot' % pid), b'x')
        sweep = StaleSweep(base, 'pool', DummyLogger(), batch=10)
        removed = []
        for _ in range(2):      # 10 entries a step; one of the 26 is our marker
            step = sweep.step([])
            assert len(step) in (9, 10) and sweep.running
            removed += step
        assert len(os.listdir(pool_dir)) == 26 - len(removed)
        removed += sweep.step([])       # the rest, and the end of the pass
        assert not sweep.running and sorted(removed) == list(range(1, 26))
        assert os.listdir(pool_dir) == [MARKER]

    def test_sweep_closes_its_directory(self, pool_dir):
        sweep = StaleSweep(os.path.dirname(pool_dir), 'pool', DummyLogger(), batch=1)
        before = len(os.listdir('/proc/self/fd'))
        for pid in (1, 2):
            write_file(os.path.join(pool_dir, '%d.slot' % pid), b'x')
        sweep.step([])
        assert sweep.running and len(os.listdir('/proc/self/fd')) > before
        sweep.close()
        assert not sweep.running and len(os.listdir('/proc/self/fd')) == before


class TestOnlyWhatWeMade:
    """An explicit scoreboard_dir may already hold a directory named like a
    pool: it is never chmodded, swept or removed."""

    def test_a_pool_directory_we_did_not_make_is_refused_and_left_as_is(self, tmp_path):
        theirs = tmp_path / 'web'
        theirs.mkdir(mode=0o755)
        os.chmod(theirs, 0o755)
        (theirs / 'data.txt').write_text('precious')
        with pytest.raises(ScoreboardError, match='was not made by the plugin'):
            ensure_pool_dir(str(tmp_path), 'web')
        assert stat.S_IMODE(os.stat(theirs).st_mode) == 0o755
        assert remove_pool_dir(str(tmp_path), 'web') == \
            '%s was not made by the plugin' % theirs
        # neither the sweep nor an exit's harvest unlinks anything in it
        write_file(theirs / '12.slot', b'x')
        assert StaleSweep(str(tmp_path), 'web', DummyLogger()).step([]) == []
        assert harvest_slot(str(tmp_path), 'web', 12) is None
        assert sorted(os.listdir(theirs)) == ['12.slot', 'data.txt']
        assert (theirs / 'data.txt').read_text() == 'precious'

    def test_a_symlink_is_refused_and_its_target_untouched(self, tmp_path):
        target = tmp_path / 'target'
        target.mkdir(mode=0o755)
        os.chmod(target, 0o755)
        (target / '12.slot').write_text('not ours')
        os.symlink(target, tmp_path / 'web')
        with pytest.raises(ScoreboardError, match='not a directory'):
            ensure_pool_dir(str(tmp_path), 'web')
        assert remove_pool_dir(str(tmp_path), 'web').startswith('cannot open')
        assert StaleSweep(str(tmp_path), 'web', DummyLogger()).step([]) == []
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
        assert os.listdir(target) == ['12.slot']

    def test_a_forged_marker_does_not_make_a_directory_ours(self, tmp_path):
        theirs = tmp_path / 'web'
        theirs.mkdir()
        os.link(__file__, theirs / MARKER)       # ours by owner, but a hard link
        with pytest.raises(ScoreboardError, match='was not made by the plugin'):
            ensure_pool_dir(str(tmp_path), 'web')

    def test_removing_our_directory_takes_only_slots_and_the_marker(self, pool_dir):
        base = os.path.dirname(pool_dir)
        SlotWriter(pool_dir, pid=10)
        write_file(os.path.join(pool_dir, '11.slot.tmp'), b'x')
        assert remove_pool_dir(base, 'pool') is None
        assert not os.path.exists(pool_dir)
        assert remove_pool_dir(base, 'pool') is None        # already gone
        ensure_pool_dir(base, 'pool')
        write_file(os.path.join(pool_dir, 'notes'), b'theirs')
        assert 'holds files the plugin did not make' in remove_pool_dir(base, 'pool')
        assert os.listdir(pool_dir) == ['notes']
