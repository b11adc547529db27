"""GET /fcgi/metrics: the pools' figures for Prometheus.

Read at scrape time from the same status structs as fcgi.getPoolStatus (no
thread, no registry, nothing kept between scrapes), turned into metric
families by `families`, a plain function of those structs, and written by
prometheus_client's own encoders: the Prometheus text format, or OpenMetrics
when the scraper's Accept asks for it.

Counts that come from connections seen at the socket (workers that write no
scoreboard slot) carry ``source="sampled"``; a worker whose slot cannot be
read loses only its exact figures, and says so in
``fcgi_process_scoreboard_slot{status="unavailable"}``.
"""

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from supervisor_fcgi_ext.common.scoreboard import WORKER_STATES
from supervisor_fcgi_ext.supervisord.durations import BOUNDS_SECONDS
from supervisor_fcgi_ext.supervisord.lifecycle import EVENTS
from supervisor_fcgi_ext.supervisord.poolstatus import FROZEN

__all__ = ['respond', 'families', 'pool_statuses', 'FAMILIES', 'PROCESS_STATES']

PROCESS_STATES = WORKER_STATES + (FROZEN, 'unknown', 'stopped')
POOL, PROCESS = ('pool',), ('pool', 'process')
COUNTER, GAUGE, HISTOGRAM = CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
_LE = [floatToGoString(bound) for bound in BOUNDS_SECONDS] + ['+Inf']

# Every family: name (a counter's without _total), kind, labels, help.
FAMILIES = (
    ('fcgi_pool_requests', COUNTER, POOL + ('source',),
     'Requests served, including by workers that have exited; source exact '
     '(scoreboard), sampled (seen at the socket) or mixed.'),
    ('fcgi_pool_accepted_connections', COUNTER, POOL + ('source',),
     'Connections accepted, including by workers that have exited.'),
    ('fcgi_pool_processes', GAUGE, POOL + ('state',),
     'Running processes, by state (active: in a request; frozen: stopped by a '
     'signal outside a request).'),
    ('fcgi_pool_max_processes', GAUGE, POOL, 'The configured limit: numprocs.'),
    ('fcgi_pool_socket_open', GAUGE, POOL, '1 while the pool socket accepts connections.'),
    ('fcgi_pool_socket_held', GAUGE, POOL,
     '1 while the plugin keeps the socket open with no worker running.'),
    ('fcgi_pool_listen_queue', GAUGE, POOL,
     "Connections waiting in the pool socket's accept queue now."),
    ('fcgi_pool_max_listen_queue', GAUGE, POOL,
     'Highest listen_queue seen (sampled, about every sample_interval).'),
    ('fcgi_pool_listen_queue_length', GAUGE, POOL,
     "The accept queue's limit: the effective backlog."),
    ('fcgi_pool_listen_drops', COUNTER, POOL,
     'Connections the kernel dropped on the pool socket (TCP only).'),
    ('fcgi_pool_max_active_processes', GAUGE, POOL,
     'Highest number of processes busy at once.'),
    ('fcgi_pool_slow_requests', COUNTER, POOL,
     'Requests seen running past a slowlog timeout (fcgi-guard).'),
    ('fcgi_pool_terminated_requests', COUNTER, POOL,
     'Requests ended by stopping their worker (fcgi-guard).'),
    ('fcgi_pool_connections', GAUGE, POOL, 'Pool connections the workers hold open now.'),
    ('fcgi_pool_fairness', GAUGE, POOL,
     "Jain's index of the requests over the running workers (1: even)."),
    ('fcgi_pool_balance', GAUGE, POOL,
     'Most requests of one worker over the mean (1: even).'),
    ('fcgi_pool_start_time_seconds', GAUGE, POOL,
     "When the pool's counters started (supervisord start or reset)."),
    ('fcgi_pool_pm', GAUGE, POOL + ('pm', 'state'),
     "Always 1, labelled with the pool's process manager (static, dynamic, "
     'ondemand) and its state (active, watching, backoff, paused, static).'),
    ('fcgi_pool_pm_target', GAUGE, POOL, 'Workers the process manager wants running.'),
    ('fcgi_pool_pm_floor', GAUGE, POOL, 'Fewest workers the process manager runs.'),
    ('fcgi_pool_pm_ceiling', GAUGE, POOL, 'Most workers the process manager may run.'),
    ('fcgi_pool_max_children_reached', COUNTER, POOL,
     'Times the pool wanted more workers than its ceiling allowed (as PHP-FPM counts).'),
    ('fcgi_pool_pm_spawns', COUNTER, POOL, 'Workers the process manager started.'),
    ('fcgi_pool_pm_stops', COUNTER, POOL, 'Workers the process manager stopped.'),
    ('fcgi_request_duration_seconds', HISTOGRAM, POOL,
     'Wall time of finished requests, counted exactly by the cooperating '
     'workers in their scoreboard slots, exited workers included.'),
    # One sample per process, labelled with the state it is in (as
    # php-fpm_exporter does): a 0 for every other state would triple a
    # scrape's size and cost for nothing a query needs.
    ('fcgi_process_state', GAUGE, PROCESS + ('state',),
     "Always 1, labelled with the worker's state: %s (from its slot; sampled "
     'workers: running while holding a connection, else idle).'
     % ', '.join(PROCESS_STATES)),
    ('fcgi_process_pid', GAUGE, PROCESS, 'The process id; 0 while not running.'),
    ('fcgi_process_requests', COUNTER, PROCESS + ('source',),
     'Requests served by this process since it started.'),
    ('fcgi_process_accepted_connections', COUNTER, PROCESS + ('source',),
     'Connections accepted by this process since it started.'),
    ('fcgi_process_start_time_seconds', GAUGE, PROCESS,
     'When supervisor started this process.'),
    ('fcgi_process_connections', GAUGE, PROCESS,
     'Pool connections this process holds open now.'),
    ('fcgi_process_scoreboard_slot', GAUGE, PROCESS + ('status',),
     "Always 1, labelled with how the process's scoreboard slot read: ok, absent "
     '(the worker writes none) or unavailable (unreadable: exact figures left out).'),
    ('fcgi_process_request_duration_seconds', GAUGE, PROCESS,
     "The current request's time so far while busy, else the last one's."),
    ('fcgi_process_last_request_duration_seconds', GAUGE, PROCESS,
     "The last finished request's wall time (also while the next one runs)."),
    ('fcgi_process_last_request_cpu', GAUGE, PROCESS,
     'CPU of the last request, percent of one CPU over its wall time.'),
    ('fcgi_process_last_request_memory_bytes', GAUGE, PROCESS,
     'Peak RSS at the end of the last request.'),
    ('fcgi_process_exceptions', COUNTER, PROCESS,
     'Requests whose application raised (answered 500).'),
    ('fcgi_process_respawns', COUNTER, PROCESS,
     'Starts of this process after its first (since supervisord start or reset).'),
    ('fcgi_process_unexpected_exits', COUNTER, PROCESS,
     'Exits with a code not in exitcodes, or before startsecs (BACKOFF).'),
    ('fcgi_process_recycles', COUNTER, PROCESS,
     "Exits at the worker's own max-requests, and stops by fcgi-guard --max-requests."),
    ('fcgi_process_guard_kills', COUNTER, PROCESS,
     'Stops by fcgi-guard --request-timeout (its request terminated).'),
)
# the process manager's fields, which the plugin adds to every pool's status
_PM_FIELDS = (('fcgi_pool_pm_target', 'target'), ('fcgi_pool_pm_floor', 'floor'),
              ('fcgi_pool_pm_ceiling', 'ceiling'),
              ('fcgi_pool_max_children_reached', 'max_children_reached'),
              ('fcgi_pool_pm_spawns', 'spawns'), ('fcgi_pool_pm_stops', 'stops'))
# status field of each one-sample pool family; below 0: a figure the kernel
# cannot give (e.g. drops of a unix socket), left out
_POOL_FIELDS = (
    ('fcgi_pool_listen_queue', 'listen_queue'),
    ('fcgi_pool_max_listen_queue', 'max_listen_queue'),
    ('fcgi_pool_listen_queue_length', 'listen_queue_len'),
    ('fcgi_pool_listen_drops', 'listen_drops'),
    ('fcgi_pool_max_active_processes', 'max_active_processes'),
    ('fcgi_pool_slow_requests', 'slow_requests'),
    ('fcgi_pool_terminated_requests', 'terminated_requests'),
    ('fcgi_pool_connections', 'connections'), ('fcgi_pool_fairness', 'fairness'),
    ('fcgi_pool_balance', 'balance'), ('fcgi_pool_start_time_seconds', 'start_time'),
)
# what only a readable scoreboard slot gives: (family, field, divisor)
_EXACT_FIELDS = (
    ('fcgi_process_request_duration_seconds', 'request_duration', 1e6),
    ('fcgi_process_last_request_duration_seconds', 'last_request_duration', 1e6),
    ('fcgi_process_last_request_cpu', 'last_request_cpu', 1),
    ('fcgi_process_last_request_memory_bytes', 'last_request_memory', 1),
    ('fcgi_process_exceptions', 'exceptions', 1),
)


def respond(plugin, path, query, headers):
    """The page for httpserve.ROUTES: every pool, encoded as asked."""
    encoder, content_type = choose_encoder(headers.get('accept', ''))
    return 200, content_type, encoder(_Scrape(plugin))


class _Scrape:
    """What prometheus_client's encoders read: a `collect()`."""

    def __init__(self, plugin):
        self.plugin = plugin

    def collect(self):
        return families(pool_statuses(self.plugin))


def pool_statuses(plugin):
    groups = plugin.fcgi_groups()
    return [plugin.status(groups[name]) for name in sorted(groups)]


def families(statuses):
    """Every metric family (in FAMILIES' order) of a list of getPoolStatus
    structs; a family with no sample still says what it is."""
    made = {name: kind(name, text, labels=labels)
            for name, kind, labels, text in FAMILIES}
    for status in statuses:
        _pool(status, made)
        for process in status['processes']:
            _process(status, process, made)
    return list(made.values())


def _pool(s, made):
    pool = [s['name']]
    source = pool + [s['requests_source']]
    made['fcgi_pool_requests'].add_metric(source, s['requests'])
    made['fcgi_pool_accepted_connections'].add_metric(source, s['accepted_conn'])
    made['fcgi_pool_processes'].add_metric(pool + ['active'], s['active_processes'])
    made['fcgi_pool_processes'].add_metric(pool + ['idle'], s['idle_processes'])
    made['fcgi_pool_processes'].add_metric(pool + [FROZEN], s['frozen_processes'])
    made['fcgi_pool_max_processes'].add_metric(pool, s['max_processes'])
    made['fcgi_request_duration_seconds'].add_metric(
        pool, list(zip(_LE, [count for _, count in s['request_duration_buckets']]
                       + [s['request_duration_count']])),
        s['request_duration_sum'])
    made['fcgi_pool_socket_open'].add_metric(pool, int(s['socket_open']))
    made['fcgi_pool_socket_held'].add_metric(pool, int(s['socket_held']))
    for name, field in _POOL_FIELDS:
        if s[field] >= 0:
            made[name].add_metric(pool, s[field])
    if 'pm' in s:      # PoolMonitor's status alone has no process manager
        made['fcgi_pool_pm'].add_metric(pool + [s['pm'], s['pm_state']], 1)
        for name, field in _PM_FIELDS:
            made[name].add_metric(pool, s[field])


def _process(s, p, made):
    labels = [s['name'], p['name']]
    made['fcgi_process_state'].add_metric(labels + [p['worker_state']], 1)
    made['fcgi_process_pid'].add_metric(labels, p['pid'])
    for event in EVENTS:       # kept across the process's exits
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
    for name, field, divisor in _EXACT_FIELDS:
        made[name].add_metric(labels, p[field] / divisor)
