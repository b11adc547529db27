"""The slot format in memory, then the files: hostile ones, torn ones, and a
writer process racing a reader."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import resource
import shutil
import stat
import struct
import sysconfig
import threading
import time
import unittest

import pytest

from supervisor_fcgi_ext import scoreboard
from supervisor_fcgi_ext.scoreboard import (
    ENV_VAR, RECORD_SIZE, ScoreboardError, Slot, SlotWriter, decode_slot,
    encode_slot, ensure_pool_dir, harvest_slot, read_pool, read_slot,
    remove_stale, slot_path,
)

PID = 4242
WRITERS = [SlotWriter, pytest.param(
    scoreboard.CSlotWriter, id='CSlotWriter', marks=pytest.mark.skipif(
        scoreboard.CSlotWriter is None, reason='the C writer is not built here'))]


def params(method, uri, length=0, **more):
    """FastCGI params as flup hands them to a request."""
    return dict(REQUEST_METHOD=method, REQUEST_URI=uri, CONTENT_LENGTH=str(length), **more)


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


@pytest.fixture(params=WRITERS)
def writer_class(request):
    return request.param


@pytest.fixture
def pool_dir(tmp_path):
    return ensure_pool_dir(str(tmp_path / 'board'), 'pool')


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


class TestWriter:
    def test_life_of_a_request(self, pool_dir, writer_class):
        writer = writer_class(pool_dir, pid=PID, threads=1, max_requests=50)
        path = os.path.join(pool_dir, '%d.slot' % PID)
        assert writer.path == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.path.getsize(path) == RECORD_SIZE
        assert not os.path.exists(path + '.tmp')
        slot = read_slot(path)
        assert (slot.state, slot.max_requests, slot.requests) == ('starting', 50, 0)
        assert abs(slot.start_time - time.time()) < 5
        writer.ready()
        assert read_slot(path).state == 'idle'
        writer.reading(opened=True, start=time.time() - 0.5)
        slot = read_slot(path)
        assert (slot.state, slot.accepted_conn, slot.connections) == ('reading', 1, 1)
        assert slot.request_duration_us >= 500000
        start = time.time() - 0.25
        writer.request_started(params('GET', '/x?y=1', 7), start=start)
        slot = read_slot(path)
        assert (slot.state, slot.accepted_conn, slot.requests, slot.active) == ('running', 1, 1, 1)
        assert (slot.request_method, slot.request_uri, slot.content_length) == ('GET', '/x?y=1', 7)
        assert 250000 <= slot.request_duration_us < 500000
        writer.set_state('idle')     # ignored: a request is in flight
        writer.set_state('finishing')
        assert read_slot(path).state == 'finishing'
        cpu = time.thread_time()
        while time.thread_time() - cpu < 0.02:    # the request uses some CPU
            pass
        writer.request_finished(200, sent=90)    # kept alive: reads the next
        slot = read_slot(path)
        assert (slot.state, slot.connections, slot.request_method, slot.request_uri,
                slot.content_length) == ('reading', 1, '', '', 0)
        last = slot.last_request_duration_us
        assert 250000 <= last < 5000000 and slot.request_duration_us < 250000
        assert 20000 / last * 100 <= slot.last_request_cpu <= 100
        assert slot.last_request_memory == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        writer.closed()
        writer.closed(counted=False, protocol_error=True)   # garbage, never shown
        slot = read_slot(path)
        assert slot == dataclasses.replace(
            slot, state='idle', accepted_conn=2, requests=1, active=0, connections=0,
            request_duration_us=last, last_request_duration_us=last, last_status=200,
            bytes_sent=90, exceptions=0, protocol_errors=1)
        writer.request_started(params('POST', '/f', 5), accepted=True)
        assert read_slot(path).connections == 1
        writer.request_finished(500, failed=True, sent=10, closing=True)
        slot = read_slot(path)
        assert (slot.exceptions, slot.connections, slot.accepted_conn) == (1, 0, 3)
        writer.close()
        writer.close()
        assert read_slot(path).requests == 2    # left for supervisord to harvest

    def test_cpu_and_memory_are_read_every_16th_request(self, pool_dir, writer_class):
        writer = writer_class(pool_dir, pid=PID)
        writer.ready()

        def request():
            writer.request_started(params('GET', '/', 0))
            cpu = time.thread_time()
            while time.thread_time() - cpu < 0.001:   # 1 ms of CPU, under 10 ms
                pass
            writer.request_finished(200)
        for _ in range(15):
            request()
        slot = read_slot(writer.path)
        assert (slot.requests, slot.last_request_cpu) == (15, 0.0)    # not read yet
        request()
        slot = read_slot(writer.path)
        # over the 16 requests' wall time; the CPU between them counts too
        assert 20 < slot.last_request_cpu < 150
        assert slot.last_request_memory == \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def test_uri_is_nul_terminated_over_a_longer_one_and_truncated(self, pool_dir, writer_class):
        writer = writer_class(pool_dir, pid=PID)
        writer.request_started(params('GET', '/a-much-longer-uri?x=1', 0))
        writer.request_started(params('GET', '/b', 0))
        assert read_slot(writer.path).request_uri == '/b'
        long = '/' + 'y' * 300
        writer.request_started(params('GET', long, 0))
        assert read_slot(writer.path).request_uri == long[:scoreboard.URI_SIZE]
        writer.request_started(params('X' * 20, '/c', 0))
        slot = read_slot(writer.path)
        assert (slot.request_method, slot.request_uri) == ('X' * 16, '/c')

    def test_threads_count_connections_and_keep_the_running_request(self, pool_dir):
        writer = SlotWriter(pool_dir, pid=PID, threads=4)
        writer.request_started(params('GET', '/slow', 0), accepted=True)
        writer.reading(opened=True)      # a second connection, while /slow runs
        slot = read_slot(writer.path)
        assert (slot.state, slot.request_uri, slot.connections, slot.accepted_conn) == \
            ('running', '/slow', 2, 2)
        writer.request_finished(200, closing=True)
        writer.closed()
        assert (read_slot(writer.path).connections, read_slot(writer.path).state) == (0, 'idle')

    def test_from_environ(self, tmp_path, capsys):
        base = str(tmp_path / 'board')
        assert SlotWriter.from_environ({}) is None
        assert SlotWriter.from_environ({ENV_VAR: base}) is None
        env = {ENV_VAR: base, 'SUPERVISOR_GROUP_NAME': 'web'}
        assert SlotWriter.from_environ(env, pid=PID) is None    # no pool dir
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and 'scoreboard disabled' in err and 'web' in err
        ensure_pool_dir(base, 'web')
        single = SlotWriter.from_environ(env, pid=PID)
        threaded = SlotWriter.from_environ(env, pid=PID + 1, threads=4, max_requests=9)
        # the fastest there is: C where it is built; Python, locked, for threads
        assert type(single) is (scoreboard.CSlotWriter or SlotWriter)
        assert type(threaded) is scoreboard._LockedSlotWriter
        assert read_slot(threaded.path).threads == 4
        threaded.request_started(params('GET', '/', 0))
        threaded.request_started(params('GET', '/', 0))
        threaded.request_finished(200)
        threaded.set_state('idle')       # another thread's request still runs
        threaded.reading()
        assert (read_slot(threaded.path).state, read_slot(threaded.path).active) == ('running', 1)
        assert SlotWriter.from_environ(dict(env, SUPERVISOR_GROUP_NAME='../x')) is None
        assert 'bad pool name' in capsys.readouterr().err

    def test_non_latin1_text_is_stored_as_utf8(self, pool_dir, writer_class):
        writer = writer_class(pool_dir, pid=PID)
        writer.request_started(params('GET', '/caf\u00e9/\u20ac', 0))
        assert read_slot(writer.path).request_uri == '/caf\u00e9/\u20ac'
        writer.request_started(params('GET', '/caf\u00e9', 0))     # latin-1: the raw bytes
        assert read_slot(writer.path).request_uri == '/caf\ufffd'



class TestCWriter:
    """The C writer is the Python one, faster: same calls, same slots."""

    def test_built_wherever_a_compiler_and_headers_are(self):
        include = sysconfig.get_paths()['include']
        if not shutil.which(sysconfig.get_config_var('CC').split()[0]) \
                or not os.path.exists(os.path.join(include, 'Python.h')):
            pytest.skip('no C compiler or no Python.h: the Python writer is used')
        assert scoreboard.CSlotWriter is not None, \
            'supervisor_fcgi_ext._slotwriter is not built: pip install -e .'

    @pytest.mark.skipif(scoreboard.CSlotWriter is None, reason='the C writer is not built here')
    def test_same_calls_write_the_same_slots(self, tmp_path):
        """Random request lives, odd params included, on both writers: the
        records agree but for the times each writer takes itself."""
        writers = [cls(ensure_pool_dir(str(tmp_path), cls.__name__), pid=PID, threads=1)
                   for cls in (SlotWriter, scoreboard.CSlotWriter)]
        odd_params = [
            {}, {'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '/app', 'PATH_INFO': '/p',
                 'QUERY_STRING': 'q=1'},
            {'SCRIPT_NAME': '/s' * 200, 'PATH_INFO': '/p', 'QUERY_STRING': 'x'},
            {'SCRIPT_NAME': '/' + 'z' * 255, 'QUERY_STRING': 'cut'},
            {'PATH_INFO': '/only', 'QUERY_STRING': ''},
            params('PROPFIND-AND-MORE-THAN-16', '/\u20ac\ud800', '12a'),
            params('GET', '/', ''), params('GET', '/', '-1'), params('GET', '/', '9' * 19),
            params('GET', '/', '\u0661\u0662'), params('GET', '/', '9' * 18),
            params('POST', 'caf\xe9', '007'),
        ]
        rng = random.Random(7)
        for i in range(400):
            call = rng.choice(('started', 'finished', 'reading', 'closed', 'state'))
            args = {
                'started': ('request_started', (rng.choice(odd_params), rng.random() < 0.5,
                                                1700000000 + i)),
                'finished': ('request_finished', (rng.choice((0, 200, 404, 65535)),
                                                  rng.random() < 0.2, rng.randrange(1 << 40),
                                                  rng.random() < 0.5)),
                'reading': ('reading', (rng.random() < 0.5, 1700000000 + i)),
                'closed': ('closed', (rng.random() < 0.5, rng.random() < 0.5)),
                'state': ('set_state', (rng.choice(('idle', 'finishing')),)),
            }[call]
            for writer in writers:
                getattr(writer, args[0])(*args[1])
            py, c = (read_slot(writer.path, now=1800000000) for writer in writers)
            untimed = dict(last_request_duration_us=0, request_duration_us=0,
                           last_request_cpu=0.0, last_request_memory=0, start_time=0)
            assert dataclasses.replace(py, **untimed) == dataclasses.replace(c, **untimed), \
                (i, call, args)
            if py.state != 'reading' or call == 'reading':     # else: when it ended
                assert py.request_start == c.request_start, (i, call)

    @pytest.mark.skipif(scoreboard.CSlotWriter is None, reason='the C writer is not built here')
    def test_misuse_raises_instead_of_crashing(self, pool_dir):
        writer = scoreboard.CSlotWriter(pool_dir, pid=PID)
        with pytest.raises(TypeError):
            writer.request_started([('REQUEST_URI', '/')])
        with pytest.raises(TypeError):
            writer.request_finished('200')
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            writer.request_started({}, bogus=1)
        with pytest.raises(TypeError, match="multiple values for argument 'status'"):
            writer.request_finished(200, status=200)
        with pytest.raises(TypeError, match='at most 4 arguments'):
            writer.request_finished(200, False, 0, False, 'extra')
        assert read_slot(writer.path).requests == 0     # nothing half-written
        writer.close()
        with pytest.raises(ValueError, match='closed'):
            writer.request_started({})
        with pytest.raises(ValueError, match='closed'):
            writer.request_finished()
        with pytest.raises(ValueError, match='512'):
            scoreboard._slotwriter.Writer(bytearray(100))
        with pytest.raises((TypeError, BufferError)):
            scoreboard._slotwriter.Writer(bytes(RECORD_SIZE))


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


def hammer_uri(i):
    return '/r/%d/%s' % (i, 'x' * (i % 37))     # shorter and longer than the last


def hammer_status(i):
    return 100 + i % 500


def hammer(path, stop, writer_class):
    """Writer process: updates whose fields agree with each other, as fast as
    it can; each connection serves two requests (kept alive after the first)."""
    writer = writer_class(os.path.dirname(path), pid=PID)
    i = 0
    while not stop.is_set() and i < 10_000_000:
        if not i & 1:
            writer.reading(opened=True, start=i)
        writer.request_started(params('GET', hammer_uri(i), i), start=i)
        writer.request_finished(hammer_status(i), sent=1, closing=i & 1)
        i += 1


def test_reader_never_sees_a_torn_slot_while_a_writer_hammers(pool_dir, writer_class):
    path = os.path.join(pool_dir, '%d.slot' % PID)
    ctx = multiprocessing.get_context('fork')
    stop = ctx.Event()
    proc = ctx.Process(target=hammer, args=(path, stop, writer_class))
    proc.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:    # until the writer's first update
            slot = read_pool(os.path.dirname(pool_dir), 'pool', [PID])[PID]
            if isinstance(slot, Slot) and slot.requests:
                break
            time.sleep(0.01)
        good = refused = 0
        states = set()
        deadline = time.monotonic() + 20
        while good < 2000 and time.monotonic() < deadline:
            try:
                slot = read_slot(path)
            except ScoreboardError as exc:
                assert 'still being written' in str(exc)
                refused += 1
                continue
            good += 1
            states.add(slot.state)
            if slot.state == 'reading':      # request n is being read
                n = slot.requests
                assert (slot.request_method, slot.request_uri, slot.content_length) == \
                    ('', '', 0)
                assert slot.accepted_conn == n // 2 + 1 and slot.connections == 1
                assert slot.bytes_sent == n
                assert slot.last_status == (hammer_status(n - 1) if n else 0)
                # on a new connection since start=n, else since request n-1 ended
                assert slot.request_start == n if n % 2 == 0 else slot.request_start > 1e9
                continue
            n = slot.content_length
            assert slot.requests == n + 1 and slot.request_uri == hammer_uri(n)
            assert slot.request_start == n and slot.accepted_conn == n // 2 + 1
            if slot.state == 'running':
                assert slot.connections == 1 and slot.bytes_sent == n
                assert slot.last_status == (hammer_status(n - 1) if n else 0)
            else:
                assert slot.state == 'idle' and n % 2 == 1 and slot.connections == 0
                assert slot.bytes_sent == n + 1 and slot.last_status == hammer_status(n)
        assert proc.is_alive(), 'the writer stopped early: the race was not run'
        # a writer this busy holds the counter odd most of the time: most
        # reads are refused, none may be inconsistent
        assert good == 2000, (good, refused)
        assert states == {'reading', 'running', 'idle'}, states
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


class TestHarvestAndStale:
    def test_harvest_reads_then_unlinks_and_never_raises(self, pool_dir, writer_class):
        base = os.path.dirname(pool_dir)
        writer = writer_class(pool_dir, pid=PID)
        writer.request_started(params('GET', '/', 0))
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
