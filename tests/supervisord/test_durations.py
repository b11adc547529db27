"""durations: a pool's histogram from per-bucket slot counts, and its
percentiles as Prometheus' histogram_quantile estimates them."""
import unittest

from supervisor_fcgi_ext.common.scoreboard import DURATION_BUCKETS
from supervisor_fcgi_ext.supervisord import durations
from supervisor_fcgi_ext.supervisord.durations import Durations


def of(pairs, sum_us=0):
    counts = [0] * DURATION_BUCKETS
    for bucket, count in pairs.items():
        counts[bucket] = count
    return Durations(tuple(counts), sum_us)


class DurationsTests(unittest.TestCase):

    def test_cumulative_buckets_end_with_the_count(self):
        self.assertEqual(durations.cumulative(of({0: 2, 3: 1, 11: 4})),
                         [2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 7])

    def test_quantiles_interpolate_within_their_bucket(self):
        # 10 requests of 5-10 ms: the median is half way through the bucket
        self.assertAlmostEqual(durations.quantile(0.5, of({1: 10})), 0.0075)
        # 100 requests: 98 under 5 ms, 2 in 1-2.5 s; p99 in the latter, at its middle
        self.assertAlmostEqual(durations.quantile(0.99, of({0: 98, 8: 2})), 1.75)
        self.assertAlmostEqual(durations.quantile(0.5, of({0: 98, 8: 2})), 0.005 * 50 / 98)

    def test_a_quantile_above_the_last_bound_is_the_last_bound(self):
        self.assertEqual(durations.quantile(0.99, of({0: 1, 11: 9})), 10.0)

    def test_no_request_no_quantile(self):
        self.assertIsNone(durations.quantile(0.5, durations.EMPTY))

    def test_since_a_baseline_never_goes_below_zero(self):
        now, base = of({0: 5, 2: 1}, 900), of({0: 2}, 100)
        self.assertEqual(durations.since(now, base), of({0: 3, 2: 1}, 800))
        # a slot whose counts are below the baseline's is another worker's
        self.assertEqual(durations.since(base, now), base)
        self.assertEqual(durations.add(now, base), of({0: 7, 2: 1}, 1000))

    def test_add_all_is_add_in_one_pass(self):
        parts = [Durations(tuple(range(i, i + DURATION_BUCKETS)), 10 * i) for i in range(5)]
        expected = durations.EMPTY
        for part in parts:
            expected = durations.add(expected, part)
        self.assertEqual(durations.add_all(parts), expected)
        self.assertEqual(durations.add_all([]), durations.EMPTY)
        self.assertEqual(durations.add_all(iter(parts[:1])), parts[0])
