"""The reference the scrape is held to: today's metric families built as
prometheus_client's own family objects from the same status structs, and
written by prometheus_client's own encoders.  supervisord/metrics.py writes
its text itself (for the cost); the tests say it is this, byte for byte."""
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import choose_encoder

from supervisor_fcgi_ext.supervisord.lifecycle import EVENTS
from supervisor_fcgi_ext.supervisord.metricrows import EXACT_FIELDS
from supervisor_fcgi_ext.supervisord.metrics import FAMILIES, LE, PM_FIELDS, POOL_FIELDS
from supervisor_fcgi_ext.supervisord.poolstatus import FROZEN

KINDS = {'counter': CounterMetricFamily, 'gauge': GaugeMetricFamily,
         'histogram': HistogramMetricFamily}


def generate(statuses, accept=''):
    """(body, content type) as prometheus_client writes the families."""
    encoder, content_type = choose_encoder(accept)
    return encoder(Collector(statuses)), content_type


class Collector:
    def __init__(self, statuses):
        self.statuses = statuses

    def collect(self):
        return families(self.statuses)


def families(statuses):
    """Every metric family (in FAMILIES' order) of a list of getPoolStatus
    structs; a family with no sample still says what it is."""
    made = {name: KINDS[kind](name, text, labels=labels)
            for name, kind, labels, text in FAMILIES}
    for status in statuses:
        pool(status, made)
        for p in status['processes']:
            process(status, p, made)
    return list(made.values())


def pool(s, made):
    labels = [s['name']]
    source = labels + [s['requests_source']]
    made['fcgi_pool_requests'].add_metric(source, s['requests'])
    made['fcgi_pool_accepted_connections'].add_metric(source, s['accepted_conn'])
    made['fcgi_pool_processes'].add_metric(labels + ['active'], s['active_processes'])
    made['fcgi_pool_processes'].add_metric(labels + ['idle'], s['idle_processes'])
    made['fcgi_pool_processes'].add_metric(labels + [FROZEN], s['frozen_processes'])
    made['fcgi_pool_max_processes'].add_metric(labels, s['max_processes'])
    made['fcgi_request_duration_seconds'].add_metric(
        labels, list(zip(LE, [count for _, count in s['request_duration_buckets']]
                         + [s['request_duration_count']])),
        s['request_duration_sum'])
    made['fcgi_pool_socket_open'].add_metric(labels, int(s['socket_open']))
    made['fcgi_pool_socket_held'].add_metric(labels, int(s['socket_held']))
    for name, field in POOL_FIELDS:
        if s[field] >= 0:
            made[name].add_metric(labels, s[field])
    if 'pm' in s:
        made['fcgi_pool_pm'].add_metric(labels + [s['pm'], s['pm_state']], 1)
        for name, field in PM_FIELDS:
            made[name].add_metric(labels, s[field])


def process(s, p, made):
    labels = [s['name'], p['name']]
    made['fcgi_process_state'].add_metric(labels + [p['worker_state']], 1)
    made['fcgi_process_pid'].add_metric(labels, p['pid'])
    for event in EVENTS:
        made['fcgi_process_' + event].add_metric(labels, p[event])
    if not p['pid']:
        return
    source = labels + [p['requests_source']]
    made['fcgi_process_requests'].add_metric(source, p['requests'])
    made['fcgi_process_accepted_connections'].add_metric(source, p['accepted_conn'])
    made['fcgi_process_start_time_seconds'].add_metric(labels, p['start'])
    if p['connections'] >= 0:
        made['fcgi_process_connections'].add_metric(labels, p['connections'])
    made['fcgi_process_scoreboard_slot'].add_metric(labels + [p['slot_status']], 1)
    if p['slot_status'] != 'ok':
        return
    for name, field, divisor in EXACT_FIELDS:
        made[name].add_metric(labels, p[field] / divisor)
