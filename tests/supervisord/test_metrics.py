"""The metric families, from status dicts the real PoolMonitor makes out of
slot files written by the real slot writer, read back through
prometheus_client's own parser (the integration tests scrape supervisord)."""
import os
import socket

import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

import metricsref
from supervisor_fcgi_ext.supervisord import metrics
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView
from supervisor_fcgi_ext.worker.slotwriter import SlotWriter

PIDS = (4000001, 4000002)   # slot files only: no such processes


def serve(writer, count, uri='/x'):
    for _ in range(count):
        writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': uri},
                               accepted=True)
        writer.request_finished(status=200, closing=True)


@pytest.fixture
def pool(pool_dir):
    """(monitor, view(pids)) of pool 'pool': 2 configured workers, slots of
    PIDS with 3 and 2 requests, one configured process stopped."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    writers = [SlotWriter(pool_dir, pid=pid) for pid in PIDS]
    serve(writers[0], 3)
    serve(writers[1], 2)

    def view(pids=PIDS, sock=listener):
        processes = [ProcessView('pool_%02d' % i, pid, 'RUNNING', 1700000000 + i)
                     for i, pid in enumerate(pids)]
        processes += [ProcessView('pool_%02d' % i, 0, 'STOPPED', 0)
                      for i in range(len(pids), 3)]
        return PoolView('pool', 'tcp://127.0.0.1:1', 8, sock, processes, False)
    yield PoolMonitor('pool', os.path.dirname(pool_dir)), view
    for writer in writers:
        writer.close()
    listener.close()


class StatusPlugin:
    """The two plugin methods a scrape uses, over prepared statuses."""

    def __init__(self, statuses):
        self.statuses = statuses

    def fcgi_groups(self):
        return {s['name']: s for s in self.statuses}

    def status(self, group):
        return group


def scrape(statuses, accept=''):
    """Render as supervisord does, parse as Prometheus would: {(name,
    labels as sorted tuple): value}."""
    code, content_type, body = metrics.respond(StatusPlugin(statuses), '/fcgi/metrics',
                                               '', {'accept': accept})
    assert code == 200
    parse = openmetrics_families if 'openmetrics' in content_type \
        else text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parse(body.decode()) for s in family.samples}


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples):
    return {name for name, _ in samples}


def test_pool_and_process_figures_have_prometheus_names(pool):
    monitor, view = pool
    status = monitor.status(view())
    samples = scrape([status])
    assert value(samples, 'fcgi_pool_requests_total', pool='pool', source='exact') == 5
    assert value(samples, 'fcgi_pool_accepted_connections_total', pool='pool',
                 source='exact') == 5
    assert value(samples, 'fcgi_process_requests_total', pool='pool',
                 process='pool_00', source='exact') == 3
    assert value(samples, 'fcgi_process_requests_total', pool='pool',
                 process='pool_01', source='exact') == 2
    assert value(samples, 'fcgi_pool_max_processes', pool='pool') == 3
    assert value(samples, 'fcgi_pool_processes', pool='pool', state='idle') == 2
    assert value(samples, 'fcgi_pool_processes', pool='pool', state='active') == 0
    assert value(samples, 'fcgi_pool_listen_queue_length', pool='pool') == 8
    assert value(samples, 'fcgi_pool_socket_open', pool='pool') == 1
    assert value(samples, 'fcgi_process_pid', pool='pool', process='pool_01') == PIDS[1]
    assert value(samples, 'fcgi_process_start_time_seconds', pool='pool',
                 process='pool_01') == 1700000001
    assert value(samples, 'fcgi_process_state', pool='pool', process='pool_00',
                 state='idle') == 1
    assert value(samples, 'fcgi_process_state', pool='pool', process='pool_02',
                 state='stopped') == 1
    assert sum(v for (name, labels), v in samples.items()
               if name == 'fcgi_process_state'
               and ('process', 'pool_00') in labels) == 1
    assert value(samples, 'fcgi_process_scoreboard_slot', pool='pool',
                 process='pool_00', status='ok') == 1
    first = status['processes'][0]
    assert value(samples, 'fcgi_process_last_request_duration_seconds', pool='pool',
                 process='pool_00') == first['last_request_duration'] / 1e6 > 0
    assert value(samples, 'fcgi_process_last_request_memory_bytes', pool='pool',
                 process='pool_00') == first['last_request_memory']
    assert value(samples, 'fcgi_process_last_request_cpu', pool='pool',
                 process='pool_00') == first['last_request_cpu']
    # a stopped process has a state and a pid of 0, no counters
    assert ('fcgi_process_requests_total', (('pool', 'pool'), ('process', 'pool_02'),
                                            ('source', 'exact'))) not in samples
    assert all(('pid', str(PIDS[0])) not in labels for _, labels in samples)


def test_openmetrics_when_the_scraper_asks(pool):
    monitor, view = pool
    status = monitor.status(view())
    accept = 'application/openmetrics-text;version=1.0.0,text/plain;q=0.5'
    _, content_type, body = metrics.respond(StatusPlugin([status]), '/fcgi/metrics',
                                            '', {'accept': accept})
    assert content_type.startswith('application/openmetrics-text')
    assert body.endswith(b'# EOF\n')
    samples = scrape([status], accept)
    assert value(samples, 'fcgi_pool_requests_total', pool='pool', source='exact') == 5
    _, content_type, _ = metrics.respond(StatusPlugin([]), '/fcgi/metrics', '', {})
    assert content_type.startswith('text/plain; version=0.0.4')


def test_pool_counters_keep_an_exited_workers_requests(pool):
    monitor, view = pool
    before = scrape([monitor.status(view())])
    monitor.process_exited(PIDS[0])        # its slot is harvested
    after = scrape([monitor.status(view(PIDS[1:]))])
    assert value(after, 'fcgi_pool_requests_total', pool='pool', source='exact') == \
        value(before, 'fcgi_pool_requests_total', pool='pool', source='exact') == 5
    assert ('fcgi_process_requests_total', (('pool', 'pool'), ('process', 'pool_01'),
                                            ('source', 'exact'))) not in after


def test_a_corrupt_slot_costs_only_that_processes_exact_figures(pool, pool_dir):
    monitor, view = pool
    with open(os.path.join(pool_dir, '%d.slot' % PIDS[1]), 'r+b') as f:
        f.write(b'garbage!')
    samples = scrape([monitor.status(view())])
    assert value(samples, 'fcgi_process_scoreboard_slot', pool='pool',
                 process='pool_01', status='unavailable') == 1
    assert ('fcgi_process_scoreboard_slot', (('pool', 'pool'), ('process', 'pool_01'),
                                             ('status', 'ok'))) not in samples
    for name in ('fcgi_process_last_request_memory_bytes',
                 'fcgi_process_request_duration_seconds',
                 'fcgi_process_last_request_duration_seconds'):
        assert (name, (('pool', 'pool'), ('process', 'pool_01'))) not in samples
        assert (name, (('pool', 'pool'), ('process', 'pool_00'))) in samples
    assert value(samples, 'fcgi_process_requests_total', pool='pool',
                 process='pool_00', source='exact') == 3
    # what is left of pool_01 says where it comes from
    assert value(samples, 'fcgi_process_requests_total', pool='pool',
                 process='pool_01', source='sampled') == 0


def test_figures_the_kernel_cannot_give_are_left_out(pool):
    monitor, view = pool
    samples = scrape([monitor.status(view(sock=None))])   # socket closed
    assert 'fcgi_pool_listen_drops_total' not in names(samples)
    assert value(samples, 'fcgi_pool_socket_open', pool='pool') == 0


def test_slot_status_is_the_status_field_not_a_warnings_text(pool, pool_dir):
    monitor, view = pool
    with open(os.path.join(pool_dir, '%d.slot' % PIDS[0]), 'r+b') as f:
        f.write(b'garbage!')
    status = monitor.status(view())
    assert [p['slot_status'] for p in status['processes']] == ['unavailable', 'ok', 'absent']
    status['warnings'] = []        # the text may change; the figure must not
    samples = scrape([status])
    assert value(samples, 'fcgi_process_scoreboard_slot', pool='pool',
                 process='pool_00', status='unavailable') == 1


def test_the_duration_histogram_counts_every_finished_request(pool, pool_dir):
    monitor, view = pool
    for accept in ('', 'application/openmetrics-text'):
        samples = scrape([monitor.status(view())], accept)
        count = value(samples, 'fcgi_request_duration_seconds_count', pool='pool')
        assert count == value(samples, 'fcgi_pool_requests_total', pool='pool',
                              source='exact') == 5
        assert value(samples, 'fcgi_request_duration_seconds_bucket', pool='pool',
                     le='+Inf') == 5
        buckets = sorted((float(dict(labels)['le']), v) for (name, labels), v
                         in samples.items() if name == 'fcgi_request_duration_seconds_bucket')
        assert [le for le, _ in buckets] == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                             1.0, 2.5, 5.0, 10.0, float('inf')]
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)        # cumulative
        assert 0 < value(samples, 'fcgi_request_duration_seconds_sum', pool='pool') < 5
    monitor.process_exited(PIDS[0])      # an exited worker's requests stay
    samples = scrape([monitor.status(view(PIDS[1:]))])
    assert value(samples, 'fcgi_request_duration_seconds_count', pool='pool') == 5


def test_frozen_processes_lifecycle_and_the_last_duration_while_busy(pool, pool_dir):
    monitor, view = pool
    monitor.process_started('pool_00')
    monitor.process_started('pool_00')
    monitor.process_exited(4000099, 'pool_02', 'unexpected')
    writer = SlotWriter(pool_dir, pid=PIDS[1])        # the same slot made afresh
    serve(writer, 1)
    writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/busy'})
    status = monitor.status(view())
    last = status['processes'][1]['last_request_duration']
    status['frozen_processes'] = 1
    samples = scrape([status])
    assert value(samples, 'fcgi_pool_processes', pool='pool', state='frozen') == 1
    assert value(samples, 'fcgi_process_respawns_total', pool='pool', process='pool_00') == 1
    # a stopped process keeps its counts
    assert value(samples, 'fcgi_process_unexpected_exits_total', pool='pool',
                 process='pool_02') == 1
    assert value(samples, 'fcgi_process_recycles_total', pool='pool', process='pool_01') == 0
    assert value(samples, 'fcgi_process_guard_kills_total', pool='pool',
                 process='pool_01') == 0
    assert value(samples, 'fcgi_process_state', pool='pool', process='pool_01',
                 state='running') == 1
    assert value(samples, 'fcgi_process_last_request_duration_seconds', pool='pool',
                 process='pool_01') == last / 1e6 > 0
    writer.close()


def test_the_process_manager_of_a_pool_status_from_the_plugin(pool):
    monitor, view = pool
    status = dict(monitor.status(view()), pm='dynamic', pm_state='active', target=3,
                  floor=2, ceiling=12, max_children_reached=1, spawns=4, stops=1)
    for accept in ('', 'application/openmetrics-text'):
        samples = scrape([status], accept)
        assert [(labels, v) for (name, labels), v in samples.items()
                if name == 'fcgi_pool_pm'] == \
            [((('pm', 'dynamic'), ('pool', 'pool'), ('state', 'active')), 1)]
        assert value(samples, 'fcgi_pool_pm_target', pool='pool') == 3
        assert value(samples, 'fcgi_pool_pm_ceiling', pool='pool') == 12
        assert value(samples, 'fcgi_pool_max_children_reached_total', pool='pool') == 1
        assert value(samples, 'fcgi_pool_pm_stops_total', pool='pool') == 1
    # PoolMonitor's status alone has no process manager
    assert not names(scrape([monitor.status(view())])) & {'fcgi_pool_pm',
                                                        'fcgi_pool_pm_target'}


def test_scrapes_of_a_real_pool_as_its_workers_serve(pool, pool_dir):
    """Scrape after scrape of PoolMonitor's statuses over slots the real
    writer keeps writing (what a scrape kept of the last must never show):
    prometheus_client's text each time."""
    monitor, view = pool
    writer = SlotWriter(pool_dir, pid=PIDS[1])
    steps = [lambda: None, lambda: serve(writer, 1),
             lambda: writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/b'}),
             lambda: None, lambda: writer.request_finished(status=200, closing=True),
             lambda: monitor.process_started('pool_01'), lambda: None]
    for step in steps:
        step()
        for pids in (PIDS, PIDS[1:]):
            status = monitor.status(view(pids))
            for accept in ('', 'application/openmetrics-text'):
                assert metrics.render([status], accept)[0] == \
                    metricsref.generate([status], accept)[0]
    writer.close()
