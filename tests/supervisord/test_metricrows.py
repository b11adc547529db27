"""A scrape writes each process's lines as the last scrape in its dialect
did when the process's values are the same (metricrows): sequences of
scrapes where one thing changes at a time are still prometheus_client's
text (metricsref) byte for byte, and what is kept is bounded by what the
last scrape wrote."""
import copy
import random

import metricsref
from supervisor_fcgi_ext.supervisord import metricrows, metrics
from supervisor_fcgi_ext.supervisord.exposition import negotiate

# text, OpenMetrics, and two escapings that change every name
ACCEPTS = ('', 'application/openmetrics-text',
           'text/plain;version=1.0.0;escaping=values',
           'application/openmetrics-text;version=1.0.0;escaping=dots')

# what a line is made of, and one field none is
WRITTEN = metricrows.TEXT_FIELDS + metricrows.NUMBER_FIELDS + ('request_duration',
                                                               'request_uri')


def same(statuses, theirs=None):
    """Assert ours is prometheus_client's (``theirs``: its bodies by Accept)."""
    for accept in ACCEPTS:
        expected = theirs[accept] if theirs else metricsref.generate(statuses, accept)[0]
        assert metrics.render(statuses, accept)[0].decode() == expected.decode(), accept


def base(pool_status):
    """A pool of every kind of process (busy, idle, stopped, sampled,
    unreadable slot) and a second pool."""
    status = pool_status(requests=(20, 10, 0), busy={1: ('POST', '/slow')}, stopped=2,
                         sampled_connections=2, unreadable=True)
    other = dict(copy.deepcopy(status), name='other')
    return [status, other]


def changed(statuses, pool, index, **fields):
    statuses = copy.deepcopy(statuses)
    statuses[pool]['processes'][index].update(fields)
    return statuses


def steps(statuses):
    """Each one change to ``statuses``: every field a line is made of of
    every process of the first pool, and what a pool goes through."""
    for pool, status in enumerate(statuses):
        for index, p in enumerate(status['processes'] if pool == 0 else ()):
            for field, value in p.items():
                if field not in WRITTEN:
                    continue
                if isinstance(value, str):
                    yield changed(statuses, pool, index, **{field: value + '"x\n'})
                    continue
                for new in (value + 1, float(value), -0.0 if value == 0 else -value,
                            float('nan')):
                    yield changed(statuses, pool, index, **{field: new})
            yield changed(statuses, pool, index, pid=0)              # stopped
            yield changed(statuses, pool, index, requests_source='sampled',
                          slot_status='absent')                      # exact to sampled
        processes = status['processes']
        pids = [p['pid'] for p in processes]
        reused = copy.deepcopy(statuses)          # pids passed round: reuse
        for p, pid in zip(reused[pool]['processes'], pids[1:] + pids[:1]):
            p['pid'] = pid
        yield reused
        renamed = copy.deepcopy(statuses)
        renamed[pool]['name'] += '2'
        yield renamed
        reordered = copy.deepcopy(statuses)
        reordered[pool]['processes'].reverse()
        yield reordered
        fewer = copy.deepcopy(statuses)
        del fewer[pool]['processes'][1:]
        yield fewer
    yield statuses[::-1]
    yield statuses[:1]
    yield [dict(statuses[0], processes=statuses[0]['processes'] * 2)]   # names twice


def test_one_change_at_a_time_is_written_as_prometheus_client_writes_it(pool_status):
    statuses = base(pool_status)
    unchanged = {accept: metricsref.generate(statuses, accept)[0] for accept in ACCEPTS}
    same(statuses, unchanged)
    for step in steps(statuses):
        same(step)                    # each change after the unchanged scrape ...
        same(statuses, unchanged)     # ... and back


def test_only_the_running_duration_changes_between_scrapes(pool_status):
    statuses = base(pool_status)
    busy = [p for p in statuses[0]['processes'] if p['worker_state'] == 'running']
    assert busy
    for duration in (0, 1, 999999, 10 ** 6, 10 ** 12 + 7, 2 ** 70, -5, 1.5, -0.0):
        for p in busy:
            p['request_duration'] = duration
        same(statuses)


def test_numbers_no_double_holds_are_written_and_not_kept(pool_status):
    """A start time and a duration past a double's range on a stopped
    process are never written; a number as text is written as float()
    reads it."""
    statuses = base(pool_status)
    stopped = [p for p in statuses[0]['processes'] if not p['pid']]
    stopped[0]['start'] = stopped[0]['request_duration'] = 10 ** 400
    for requests in ('7', '8'):
        statuses[0]['processes'][0]['requests'] = requests
        statuses[0]['processes'][1]['request_duration'] += 1
        same(statuses)
    kept = metrics.ROWS[False, 'underscores'].last['app']
    assert kept.doubles is None                                 # never found again
    assert kept.by_name[stopped[0]['name']][1] is None          # nor the process


def test_a_random_walk_of_changes(pool_status):
    statuses = base(pool_status)
    rng = random.Random(15)
    for _ in range(150):
        status = rng.choice(statuses)
        p = rng.choice(status['processes'])
        field = rng.choice(sorted(p))
        if isinstance(p[field], str):
            p[field] = rng.choice((p[field], 'ok', 'idle', 'busy', 'x"\\y', ''))
        else:
            p[field] = rng.choice((0, -0.0, 0.0, 1, 1.0, p[field], 7e6, 2 ** 64))
        same(statuses)


def test_what_is_kept_is_what_the_last_scrape_wrote(pool_status):
    status = pool_status(requests=(1, 1, 1))
    for i in range(200):
        pools = [dict(copy.deepcopy(status), name='pool%d' % (i + k)) for k in range(3)]
        for p in pools[0]['processes']:
            p['name'] += str(i)
            p['requests'] = i
        for accept in ACCEPTS:
            metrics.render(pools, accept)
    assert len(metrics.ROWS) <= 8
    for kept in [metrics.ROWS[negotiate(accept)[:2]] for accept in ACCEPTS]:
        assert set(kept.last) <= {'pool199', 'pool200', 'pool201'}
        for pool in kept.last.values():
            assert len(pool.by_name) <= 3 and len(pool.texts) <= 3
            assert len(pool.columns) == len(metricrows.ROW_FAMILIES)
    metrics.render([])
    assert metrics.ROWS[False, 'underscores'].last == {}
