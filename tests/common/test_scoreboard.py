"""The slot format in memory (test_slots has the files supervisord reads,
test_slotwriter the writers, and a writer process racing a reader)."""
from __future__ import annotations

import dataclasses
import random
import struct
import unittest

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.common.scoreboard import (
    RECORD_SIZE, ScoreboardError, Slot, decode_slot, encode_slot,
)
from slotfactory import PID, make_slot


class FormatTests(unittest.TestCase):
    """encode_slot/decode_slot: no files."""

    def test_round_trip_of_an_idle_slot_is_exact(self):
        slot = make_slot()
        self.assertEqual(decode_slot(encode_slot(slot)), slot)
        self.assertEqual(len(encode_slot(slot)), RECORD_SIZE)

    def test_a_decoded_slot_is_a_slot_like_any_other(self):
        """decode_slot fills the frozen dataclass without its __init__: every
        field there, nothing more, still frozen, replace and hash as usual."""
        made = make_slot(state='running', request_duration_counts=tuple(range(12)))
        slot = decode_slot(encode_slot(made), now=made.request_start + 1)
        self.assertEqual(list(vars(slot)), [f.name for f in dataclasses.fields(Slot)])
        self.assertEqual(slot, dataclasses.replace(made, request_duration_us=1000000))
        self.assertEqual(hash(slot), hash(dataclasses.replace(slot)))
        with self.assertRaises(dataclasses.FrozenInstanceError):
            slot.requests = 1

    def test_layout_is_the_documented_one(self):
        # docs/scoreboard.rst promises these offsets to writers in other languages
        self.assertEqual(scoreboard.OFFSETS, {
            'last_request_duration': 24, 'last_request_cpu': 32,
            'last_request_memory': 40, 'bytes_sent': 48, 'exceptions': 56,
            'last_status': 64, 'active': 72, 'state': 74, 'connections': 76,
            'requests': 80, 'accepted_conn': 88,
            'request_start': 96, 'content_length': 104, 'method': 112, 'uri': 128,
            'start_time': 384, 'max_requests': 392, 'protocol_errors': 400,
            'threads': 408, 'request_duration_counts': 416, 'request_duration_sum': 512})
        data = encode_slot(make_slot(state='running', active=2, connections=3))
        self.assertEqual(data[:8], b'SVFCGISB')
        self.assertEqual(struct.unpack_from('<HHIQ', data, 8), (3, 1024, PID, 0))
        # active, state and connections share one 8-byte word, gaps zero
        self.assertEqual(struct.unpack_from('<Q', data, 72)[0], 2 | 3 << 16 | 3 << 32)
        self.assertEqual(data[410:416], bytes(6))
        self.assertEqual(data[520:], bytes(504))

    def test_the_histogram_is_stored_per_bucket_then_the_sum(self):
        counts = tuple(range(1, scoreboard.DURATION_BUCKETS + 1))
        slot = make_slot(request_duration_counts=counts, request_duration_sum_us=2 ** 63)
        data = encode_slot(slot)
        self.assertEqual(struct.unpack_from('<12QQ', data, 416), counts + (2 ** 63,))
        self.assertEqual(decode_slot(data), slot)
        with self.assertRaisesRegex(ScoreboardError, '3 duration buckets, not 12'):
            encode_slot(make_slot(request_duration_counts=(1, 2, 3)))

    def test_a_duration_counts_in_the_first_bucket_whose_bound_holds_it(self):
        # Prometheus' le: a bound is inclusive; above 10 s is the last bucket
        self.assertEqual(scoreboard.DURATION_BOUNDS_US[0], 5000)
        self.assertEqual(scoreboard.DURATION_BOUNDS_US[-1], 10000000)
        for us, bucket in ((0, 0), (5000, 0), (5001, 1), (99999, 4), (100000, 4),
                           (10000000, 10), (10000001, 11), (10 ** 12, 11)):
            self.assertEqual(scoreboard.duration_bucket(us), bucket, us)

    def test_a_version_2_slot_is_refused_by_its_version_not_its_size(self):
        v2 = b'SVFCGISB' + struct.pack('<HHIQ', 2, 512, PID, 0) + bytes(488)
        with self.assertRaisesRegex(ScoreboardError,
                                    '^unsupported slot format version 2 size 512$'):
            decode_slot(v2)

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
            'size 512': good[:10] + struct.pack('<H', 512) + good[12:],
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


class CombinedSourceTests(unittest.TestCase):

    def test_one_source_is_kept(self):
        self.assertEqual(scoreboard.combined_source(['sampled', 'sampled']), 'sampled')
        self.assertEqual(scoreboard.combined_source({'exact'}), 'exact')

    def test_different_sources_are_mixed(self):
        self.assertEqual(scoreboard.combined_source(iter(['exact', 'sampled'])), 'mixed')

    def test_no_source_is_exact(self):
        self.assertEqual(scoreboard.combined_source([]), 'exact')
