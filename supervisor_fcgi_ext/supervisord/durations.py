"""A pool's request-duration histogram, from its workers' slots.

Each slot holds per-bucket counts (common/scoreboard.py); a pool's
histogram is their sum over its workers, the exited ones included, less
what they had at a reset.  Plain values only: `PoolMonitor` keeps them,
`poolstatus` and `metrics` present them.
"""
import collections

from supervisor_fcgi_ext.common.scoreboard import DURATION_BOUNDS_US, DURATION_BUCKETS

__all__ = ['Durations', 'EMPTY', 'of_slot', 'add', 'add_all', 'since', 'cumulative',
           'quantile', 'BOUNDS_SECONDS']

Durations = collections.namedtuple('Durations', 'counts sum_us')
Durations.__doc__ = """Finished requests per bucket (DURATION_BUCKETS, not
cumulative) and their wall times added up, in µs."""

EMPTY = Durations((0,) * DURATION_BUCKETS, 0)
BOUNDS_SECONDS = tuple(bound / 1e6 for bound in DURATION_BOUNDS_US)


def of_slot(slot):
    return Durations(tuple(slot.request_duration_counts), slot.request_duration_sum_us)


def add(a, b):
    return Durations(tuple(x + y for x, y in zip(a.counts, b.counts)), a.sum_us + b.sum_us)


def add_all(parts):
    """The sum of many Durations in one pass (a status adds one per worker)."""
    parts = list(parts)
    return Durations(tuple(map(sum, zip(*(p.counts for p in parts)))) if parts
                     else EMPTY.counts, sum(p.sum_us for p in parts))


def since(now, base):
    """What a worker counted after ``base`` (its slot at a reset); a count
    below its base (not the same worker, or a writer's bug) counts from 0,
    so no total ever goes down."""
    if any(n < b for n, b in zip(now.counts, base.counts)) or now.sum_us < base.sum_us:
        return now
    return Durations(tuple(n - b for n, b in zip(now.counts, base.counts)),
                     now.sum_us - base.sum_us)


def cumulative(durations):
    """Prometheus' buckets: the count at or under each bound, the last one all."""
    total, out = 0, []
    for count in durations.counts:
        total += count
        out.append(total)
    return out


def quantile(q, durations):
    """The ``q`` quantile in seconds as Prometheus' histogram_quantile
    estimates it (linear within the bucket it falls in; the highest bound
    when it falls above it); None without a request."""
    buckets = cumulative(durations)
    total = buckets[-1]
    if not total:
        return None
    rank = q * total
    for i, count in enumerate(buckets[:-1]):
        if count >= rank:
            lower = BOUNDS_SECONDS[i - 1] if i else 0.0
            below = buckets[i - 1] if i else 0
            return lower + (BOUNDS_SECONDS[i] - lower) * (rank - below) / (count - below)
    return BOUNDS_SECONDS[-1]
