"""The slot format in memory, then the files: hostile ones and torn ones
(test_slotwriter has the writers, and a writer process racing a reader)."""
from __future__ import annotations

import os
import random
import stat
import struct
import threading
import time
import unittest

import pytest

from supervisor_fcgi_ext import scoreboard
from supervisor_fcgi_ext.scoreboard import (
    RECORD_SIZE, ScoreboardError, Slot, decode_slot,
    encode_slot, ensure_pool_dir, harvest_slot, read_pool, read_slot,
    remove_stale, slot_path,
)
from supervisor_fcgi_ext.slotwriter import SlotWriter

PID = 4242
def make_slot(**fields):
    base = dict(pid=PID, start_time=1700000000.25, state='idle', accepted_conn=3,
                requests=5, request_method='POST', request_uri='/a?b=c',
                content_length=12, request_start=1700000100.5,
                request_duration_us=1500, last_request_duration_us=1500,
                last_request_cpu=12.5, last_request_memory=30 << 20, last_status=201,
                active=0, threads=1, max_requests=1000, exceptions=1,
                protocol_errors=2, bytes_sent=777, connections=1)
    base.update(fields)
    return Slot(**base)


class FormatTests(unittest.TestCase):
    """encode_slot/decode_slot: no files."""

    def test_round_trip_of_an_idle_slot_is_exact(self):
        slot = make_slot()
        self.assertEqual(decode_slot(encode_slot(slot)), slot)
        self.assertEqual(len(encode_slot(slot)), RECORD_SIZE)

    def test_layout_is_the_documented_one(self):
        # docs/scoreboard.rst promises these offsets to writers in other languages
        self.assertEqual(scoreboard.OFFSETS, {
            'last_request_duration': 24, 'last_request_cpu': 32,
            'last_request_memory': 40, 'bytes_sent': 48, 'exceptions': 56,
            'last_status': 64, 'active': 72, 'state': 74, 'connections': 76,
            'requests': 80, 'accepted_conn': 88,
            'request_start': 96, 'content_length': 104, 'method': 112, 'uri': 128,
            'start_time': 384, 'max_requests': 392, 'protocol_errors': 400,
            'threads': 408})
        data = encode_slot(make_slot(state='running', active=2, connections=3))
        self.assertEqual(data[:8], b'SVFCGISB')
        self.assertEqual(struct.unpack_from('<HHIQ', data, 8), (2, 512, PID, 0))
        # active, state and connections share one 8-byte word, gaps zero
        self.assertEqual(struct.unpack_from('<Q', data, 72)[0], 2 | 3 << 16 | 3 << 32)
        self.assertEqual(data[410:], bytes(102))

    def test_running_slot_reports_elapsed_time_from_now(self):
        slot = make_slot(state='running', active=1)
        decoded = decode_slot(encode_slot(slot), now=slot.request_start + 2.25)
        self.assertEqual(decoded.request_duration_us, 2250000)
        self.assertEqual(decoded.last_request_duration_us, 1500)
        self.assertEqual(decode_slot(encode_slot(slot), now=0).request_duration_us, 0)

    def test_long_fields_are_truncated_and_bad_bytes_replaced(self):
        slot = make_slot(request_method='M' * 40, request_uri='/' + 'x' * 400)
        decoded = decode_slot(encode_slot(slot))
        self.assertEqual(decoded.request_method, 'M' * scoreboard.METHOD_SIZE)
        self.assertEqual(len(decoded.request_uri), scoreboard.URI_SIZE)
        data = bytearray(encode_slot(slot))
        data[128:131] = b'/\xff\xfe'
        self.assertEqual(decode_slot(bytes(data)).request_uri[:3], '/\ufffd\ufffd')

    def test_bad_records_raise_one_line_errors(self):
        good = encode_slot(make_slot())
        cases = {
            'bad magic': b'XXXXXXXX' + good[8:],
            'version 1': good[:8] + struct.pack('<H', 1) + good[10:],
            'size 1024': good[:10] + struct.pack('<H', 1024) + good[12:],
            'being written': good[:16] + struct.pack('<Q', 7) + good[24:],
            'bad worker state 9': good[:74] + b'\x09' + good[75:],
            'truncated': good[:100],
        }
        for reason, data in cases.items():
            with self.assertRaises(ScoreboardError) as ctx:
                decode_slot(data)
            self.assertIn(reason, str(ctx.exception))
            self.assertNotIn('\n', str(ctx.exception))
        with self.assertRaisesRegex(ScoreboardError, 'belongs to pid 4242, not 7'):
            decode_slot(good, pid=7)

    def test_mutated_records_decode_or_raise_scoreboard_error_only(self):
        good = encode_slot(make_slot())
        rng = random.Random(1)
        for _ in range(3000):
            data = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(RECORD_SIZE)] = rng.randrange(256)
            try:
                decode_slot(bytes(data))
            except ScoreboardError:
                pass

    def test_unknown_state_cannot_be_encoded(self):
        with self.assertRaises(ScoreboardError):
            encode_slot(make_slot(state='sleeping'))


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

    def test_remove_stale_keeps_live_workers_only(self, pool_dir):
        base = os.path.dirname(pool_dir)
        for pid in (10, 11, 12):
            SlotWriter(pool_dir, pid=pid)
        for name in ('11.slot.tmp', '13.slot.tmp', 'junk', '.hidden'):
            write_file(os.path.join(pool_dir, name), b'x')
        os.mkdir(os.path.join(pool_dir, 'subdir'))
        assert remove_stale(base, 'pool', [11, 99]) == [10, 12]
        assert sorted(os.listdir(pool_dir)) == ['11.slot', '11.slot.tmp', 'subdir']
        assert remove_stale(base, 'pool', [11]) == []
        assert remove_stale(base, 'missing', []) == []
        assert remove_stale(base, '../..', []) == []
