"""The scrape's text is what prometheus_client writes for the same families
(metricsref.py), byte for byte and with the same content type, in every
format and escaping a scraper can ask for: over real statuses (PoolMonitor
over slot files the real slot writer wrote) and over random and hostile
ones."""
import math
import random

import pytest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

import metricsref
from supervisor_fcgi_ext.supervisord import exposition, metrics

ACCEPTS = (
    '',
    'text/plain;version=0.0.4',
    # Prometheus 2's and 3's defaults
    'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1',
    'application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,'
    'text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.1',
    'application/openmetrics-text',
    'application/openmetrics-text; version=2.0.0',
) + tuple('%s;version=1.0.0;escaping=%s' % (kind, escaping)
          for kind in ('application/openmetrics-text', 'text/plain')
          for escaping in ('allow-utf-8', 'underscores', 'dots', 'values', 'bogus'))

HOSTILE = ('', 'a"b', 'back\\slash', 'new\nline', '\\n', '\ufffe', '\uffff', 'zoë 日本',
           '}{,=', '%s %d', '"\\"\n', ' ', '\x00', '\U0001f600', 'x' * 300)
NUMBERS = (0, 1, -1, 0.0, -0.0, 0.5, 1e-7, 5e-324, 999999, 1000000, 999999.5, 1e6,
           123456789, 2 ** 53, 2 ** 53 + 1, -2 ** 53, -2 ** 53 - 1, 2 ** 63, 2 ** 64 + 7,
           -(2 ** 70), 1.7e308, -1.5e300, 1700000000.25, float('nan'), float('inf'),
           float('-inf'), True, False)


def same(statuses):
    """Assert ours equals prometheus_client's for every Accept."""
    for accept in ACCEPTS:
        ours = metrics.render(statuses, accept)
        theirs = metricsref.generate(statuses, accept)
        assert ours[1] == theirs[1], accept
        assert ours[0].decode() == theirs[0].decode(), accept


def with_pm(status):
    return dict(status, pm='dynamic', pm_state='active', target=3, floor=2, ceiling=12,
                max_children_reached=1, spawns=4, stops=1)


def test_real_statuses_are_written_as_prometheus_client_writes_them(pool_status):
    busy = pool_status(requests=(20, 10, 0), busy={1: ('POST', '/slow')}, stopped=2,
                       sampled_connections=2, unreadable=True)
    closed = dict(pool_status(requests=(3,), socket_open=False), name='other')
    empty = dict(pool_status(requests=()), name='empty')
    assert busy['processes'] and not empty['processes']
    assert {p['slot_status'] for p in busy['processes']} >= {'ok', 'absent', 'unavailable'}
    same([busy, with_pm(closed), empty])
    same([])


def mutated(status, rng):
    """The status with hostile names and random numbers wherever a scrape
    reads one (a field a comparison guards gets a number that compares)."""
    s = dict(status, name=rng.choice(HOSTILE), requests_source=rng.choice(HOSTILE))
    for key, value in s.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            s[key] = rng.choice(NUMBERS)
    s['request_duration_buckets'] = [(b, rng.choice(NUMBERS))
                                     for b, _ in s['request_duration_buckets']]
    if rng.random() < 0.2:
        s['request_duration_sum'] = None       # no _count, no _sum
    if rng.random() < 0.5:
        s = with_pm(dict(s, pm=rng.choice(HOSTILE), pm_state=rng.choice(HOSTILE),
                         target=rng.choice(NUMBERS)))
    processes = []
    for p in s['processes']:
        p = dict(p, name=rng.choice(HOSTILE), worker_state=rng.choice(HOSTILE),
                 slot_status=rng.choice(('ok', 'absent', 'unavailable', 'x"y')),
                 requests_source=rng.choice(HOSTILE))
        for key, value in p.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                p[key] = rng.choice(NUMBERS)
        processes.append(p)
    s['processes'] = processes
    return s


def test_hostile_and_random_statuses_are_written_as_prometheus_client_writes_them(
        pool_status):
    real = pool_status(requests=(2, 1), busy={0: ('GET', '/x')}, stopped=1,
                       sampled_connections=1, unreadable=True)
    rng = random.Random(12)
    for _ in range(60):
        statuses = [mutated(real, rng) for _ in range(rng.randrange(4))]
        same(statuses)


def test_numbers_are_floatToGoString():
    rng = random.Random(7)
    values = list(NUMBERS) + [rng.uniform(-1e7, 1e7) for _ in range(2000)] \
        + [rng.randrange(-2 ** 60, 2 ** 60) for _ in range(2000)] \
        + [math.ldexp(rng.random(), rng.randrange(-1074, 1024)) for _ in range(2000)] \
        + [rng.randrange(10 ** 6 - 3, 10 ** 6 + 3) for _ in range(20)] \
        + ['7', '-2.5']            # floatToGoString takes what float() takes
    families = (('g', 'gauge', (), 'values'),)
    kept = exposition.Kept(floatToGoString)
    for _ in range(2):         # the second time big ones come from the first's
        page = exposition.Page(exposition.Dialect(families, False, 'underscores'),
                               exposition.Kept(exposition.escape_value).scrape(),
                               kept.scrape())
        page.extend('g', [((), value) for value in values])
        lines = page.text().decode().splitlines()[2:]
        assert lines == ['g %s' % floatToGoString(value) for value in values]
    assert all(float(value) >= 1e6 or value != value or value == float('-inf')
               for value in kept.last)


def test_a_name_no_encoding_holds_fails_the_scrape_as_the_reference(pool_status):
    status = dict(pool_status(requests=(1,)), name='bad\udc80')
    with pytest.raises(UnicodeEncodeError):
        metricsref.generate([status])
    with pytest.raises(UnicodeEncodeError):
        metrics.render([status])


def test_every_family_says_what_it_is_without_a_sample():
    body, _ = metrics.render([])
    helps = [line.split()[2] for line in body.decode().splitlines()
             if line.startswith('# HELP')]
    assert helps == [name + ('_total' if kind == 'counter' else '')
                     for name, kind, _, _ in metrics.FAMILIES]


def test_what_a_scrape_keeps_is_bounded_by_what_exists(pool_status):
    many = [dict(pool_status(requests=(1, 1)), name='pool%d' % i) for i in range(50)]
    metrics.render(many)
    assert len(metrics.ESCAPES.last) >= 50
    one = many[:1]
    metrics.render(one)
    # the pool's and its processes' names and states, nothing of the others
    assert set(metrics.ESCAPES.last) <= {'pool0', 'app_00', 'app_01', 'exact', 'idle',
                                         'ok', 'active', 'frozen'} | set(metrics.LE)
    metrics.dialect.cache_clear()
    for version in range(100):        # the Accept header is the scraper's
        metrics.render(one, 'application/openmetrics-text;version=1.%d.0;escaping=%s'
                       % (version, 'x' * version))
        metrics.render(one, 'text/plain;version=1.0.%d' % version)
    assert metrics.dialect.cache_info().currsize == 2


def test_kept_values_are_only_the_last_scrapes():
    escapes = exposition.Kept(exposition.escape_value)
    first = escapes.scrape()
    assert first('a"b') == 'a\\"b'
    assert first('c') == 'c'
    second = escapes.scrape()
    assert second('c') == 'c'
    assert escapes.last == {'c': 'c'}


def test_any_family_is_written_as_prometheus_client_writes_it():
    """The writer alone, on families of its own: help texts with what
    needs escaping, label names that a scheme changes (dots doubles '_')."""
    families = (('a_total_of', 'counter', ('b_c', 'a'), 'back \\ slash\nnew "line"'),
                ('g', 'gauge', (), 'no labels'),
                ('h_x', 'histogram', ('zz', 'a_b'), 'h\\n'))
    kinds = {'counter': CounterMetricFamily, 'gauge': GaugeMetricFamily,
             'histogram': HistogramMetricFamily}
    rng = random.Random(3)
    samples = [(rng.choice(HOSTILE), rng.choice(HOSTILE), rng.choice(NUMBERS))
                for _ in range(20)]
    buckets = [('0.5', 1), ('1.0', 2), ('+Inf', 3)]

    class Reference:
        def collect(self):
            made = [kinds[kind](name, text, labels=labels)
                    for name, kind, labels, text in families]
            for x, y, v in samples:
                made[0].add_metric([x, y], v)
                made[1].add_metric([], v)
                made[2].add_metric([x, y], buckets, v)
            return made
    for accept in ACCEPTS:
        openmetrics, escaping, content_type = exposition.negotiate(accept)
        page = exposition.Page(exposition.Dialect(families, openmetrics, escaping),
                               exposition.Kept(exposition.escape_value).scrape())
        rows = [((page.escape(x), page.escape(y)), v) for x, y, v in samples]
        page.extend('a_total_of', rows[:10])      # labels sorted: ('a', 'b_c')
        for labels, v in rows[10:]:
            page.add('a_total_of', labels, v)
        for labels, v in rows:
            page.add('g', (), v)
            page.histogram('h_x', labels, buckets, v)
        encoder, theirs = choose_encoder(accept)
        assert content_type == theirs
        assert page.text().decode() == encoder(Reference()).decode(), accept
