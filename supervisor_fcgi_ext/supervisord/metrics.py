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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from supervisor_fcgi_ext.common.scoreboard import BUSY_STATES, WORKER_STATES

__all__ = ['respond', 'families', 'pool_statuses', 'slot_status', 'PROCESS_STATES']

PROCESS_STATES = WORKER_STATES + ('stopped',)
UNREADABLE_SLOT = ': scoreboard slot unreadable'   # pools.py's warning text
POOL, PROCESS = ('pool',), ('pool', 'process')

# (name, kind, help, status field): one sample per pool; figures below 0 are
# the ones the kernel cannot give (e.g. drops of a unix socket) and are left out.
_POOL_FIGURES = (
    ('fcgi_pool_listen_queue', GaugeMetricFamily,
     'Connections waiting in the pool socket\'s accept queue now.', 'listen_queue'),
    ('fcgi_pool_max_listen_queue', GaugeMetricFamily,
     'Highest listen_queue seen (sampled, about every sample_interval).',
     'max_listen_queue'),
    ('fcgi_pool_listen_queue_length', GaugeMetricFamily,
     'The accept queue\'s limit: the effective backlog.', 'listen_queue_len'),
    ('fcgi_pool_listen_drops', CounterMetricFamily,
     'Connections the kernel dropped on the pool socket (TCP only).', 'listen_drops'),
    ('fcgi_pool_max_active_processes', GaugeMetricFamily,
     'Highest number of processes busy at once.', 'max_active_processes'),
    ('fcgi_pool_slow_requests', CounterMetricFamily,
     'Requests seen running past a slowlog timeout (fcgi-guard).', 'slow_requests'),
    ('fcgi_pool_terminated_requests', CounterMetricFamily,
     'Requests ended by stopping their worker (fcgi-guard).', 'terminated_requests'),
    ('fcgi_pool_connections', GaugeMetricFamily,
     'Pool connections the workers hold open now.', 'connections'),
    ('fcgi_pool_fairness', GaugeMetricFamily,
     'Jain\'s index of the requests over the running workers (1: even).', 'fairness'),
    ('fcgi_pool_balance', GaugeMetricFamily,
     'Most requests of one worker over the mean (1: even).', 'balance'),
    ('fcgi_pool_start_time_seconds', GaugeMetricFamily,
     'When the pool\'s counters started (supervisord start or reset).', 'start_time'),
)
# Figures only a readable scoreboard slot gives: (..., field, divisor).
_EXACT_FIGURES = (
    ('fcgi_process_request_duration_seconds', GaugeMetricFamily,
     'The current request\'s time so far while busy, else the last one\'s.',
     'request_duration', 1e6),
    ('fcgi_process_last_request_cpu', GaugeMetricFamily,
     'CPU of the last request, percent of one CPU over its wall time.',
     'last_request_cpu', 1),
    ('fcgi_process_last_request_memory_bytes', GaugeMetricFamily,
     'Peak RSS at the end of the last request.', 'last_request_memory', 1),
    ('fcgi_process_exceptions', CounterMetricFamily,
     'Requests whose application raised (answered 500).', 'exceptions', 1),
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


def slot_status(process, warnings):
    """ok / absent / unavailable: how a process's scoreboard slot read."""
    if process['requests_source'] == 'exact':
        return 'ok'
    prefix = process['name'] + UNREADABLE_SLOT
    if any(warning.startswith(prefix) for warning in warnings):
        return 'unavailable'
    return 'absent'


def families(statuses):
    """Metric families of a list of getPoolStatus structs."""
    out = {}

    def family(name, kind, text, labels):
        if name not in out:
            out[name] = kind(name, text, labels=labels)
        return out[name]

    for status in statuses:
        _pool(status, family)
        for process in status['processes']:
            _process(status, process, family)
    return list(out.values())


def _pool(s, family):
    pool = [s['name']]
    source = [s['name'], s['requests_source']]
    family('fcgi_pool_requests', CounterMetricFamily,
           'Requests served, including by workers that have exited; source '
           'exact (scoreboard), sampled (seen at the socket) or mixed.',
           POOL + ('source',)).add_metric(source, s['requests'])
    family('fcgi_pool_accepted_connections', CounterMetricFamily,
           'Connections accepted, including by workers that have exited.',
           POOL + ('source',)).add_metric(source, s['accepted_conn'])
    processes = family('fcgi_pool_processes', GaugeMetricFamily,
                       'Running processes, by state (active: in a request).',
                       POOL + ('state',))
    processes.add_metric(pool + ['active'], s['active_processes'])
    processes.add_metric(pool + ['idle'], s['idle_processes'])
    family('fcgi_pool_max_processes', GaugeMetricFamily,
           'The configured limit: numprocs.', POOL).add_metric(
        pool, len(s['processes']))
    family('fcgi_pool_socket_open', GaugeMetricFamily,
           '1 while the pool socket accepts connections.', POOL).add_metric(
        pool, int(s['socket_open']))
    family('fcgi_pool_socket_held', GaugeMetricFamily,
           '1 while the plugin keeps the socket open with no worker running.',
           POOL).add_metric(pool, int(s['socket_held']))
    for name, kind, text, field in _POOL_FIGURES:
        metric = family(name, kind, text, POOL)
        if s[field] >= 0:
            metric.add_metric(pool, s[field])


def _process(s, p, family):
    labels = [s['name'], p['name']]
    # One sample per process, labelled with the state it is in (as
    # php-fpm_exporter does): a 0 for every other state would triple a
    # scrape's size and cost for nothing a query needs.
    family('fcgi_process_state', GaugeMetricFamily,
           'Always 1, labelled with the worker\'s state: %s (from its slot; '
           'sampled workers: running while holding a connection, else idle).'
           % ', '.join(PROCESS_STATES), PROCESS + ('state',)).add_metric(
        labels + [p['worker_state']], 1)
    family('fcgi_process_pid', GaugeMetricFamily,
           'The process id; 0 while not running.', PROCESS).add_metric(labels, p['pid'])
    if not p['pid']:
        return
    source = labels + [p['requests_source']]
    family('fcgi_process_requests', CounterMetricFamily,
           'Requests served by this process since it started.',
           PROCESS + ('source',)).add_metric(source, p['requests'])
    family('fcgi_process_accepted_connections', CounterMetricFamily,
           'Connections accepted by this process since it started.',
           PROCESS + ('source',)).add_metric(source, p['accepted_conn'])
    family('fcgi_process_start_time_seconds', GaugeMetricFamily,
           'When supervisor started this process.', PROCESS).add_metric(
        labels, p['start'])
    connections = family('fcgi_process_connections', GaugeMetricFamily,
                         'Pool connections this process holds open now.', PROCESS)
    if p['connections'] >= 0:
        connections.add_metric(labels, p['connections'])
    slot = slot_status(p, s['warnings'])
    family('fcgi_process_scoreboard_slot', GaugeMetricFamily,
           'Always 1, labelled with how the process\'s scoreboard slot read: ok, '
           'absent (the worker writes none) or unavailable (unreadable: exact '
           'figures left out).', PROCESS + ('status',)).add_metric(labels + [slot], 1)
    idle = p['worker_state'] not in BUSY_STATES
    last = family('fcgi_process_last_request_duration_seconds', GaugeMetricFamily,
                  'The last request\'s wall time (while idle).', PROCESS)
    for name, kind, text, field, divisor in _EXACT_FIGURES:
        metric = family(name, kind, text, PROCESS)
        if slot == 'ok':
            metric.add_metric(labels, p[field] / divisor)
    if slot == 'ok' and idle:
        last.add_metric(labels, p['request_duration'] / 1e6)
