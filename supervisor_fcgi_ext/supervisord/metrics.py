"""GET /fcgi/metrics: the pools' figures for Prometheus.

Read at scrape time from the same status structs as fcgi.getPoolStatus (no
thread, no registry), and written by `exposition` straight into the
Prometheus text format, or OpenMetrics when the scraper's Accept asks for it:
the text prometheus_client would write for these families (the tests compare
byte for byte), 5 to 10 times cheaper (bench_metrics).  All a scrape keeps
for the next is what it wrote of the pools and processes that exist: their
escaped label values, and each process's lines (`metricrows`).

Counts that come from connections seen at the socket (workers that write no
scoreboard slot) carry ``source="sampled"``; a worker whose slot cannot be
read loses only its exact figures, and says so in
``fcgi_process_scoreboard_slot{status="unavailable"}``.
"""

import functools

from prometheus_client.utils import floatToGoString

from supervisor_fcgi_ext.common.scoreboard import WORKER_STATES
from supervisor_fcgi_ext.supervisord.durations import BOUNDS_SECONDS
from supervisor_fcgi_ext.supervisord.exposition import Dialect, Kept, Page, escape_value, negotiate
from supervisor_fcgi_ext.supervisord import metricrows
from supervisor_fcgi_ext.supervisord.poolstatus import FROZEN
from supervisor_fcgi_ext.supervisord.statuspage import pool_statuses

__all__ = ['respond', 'render', 'dialect', 'ESCAPES', 'NUMBERS', 'FAMILIES', 'PROCESS_STATES',
           'LE', 'POOL_FIELDS', 'PM_FIELDS']

PROCESS_STATES = WORKER_STATES + (FROZEN, 'unknown', 'stopped')
POOL, PROCESS = ('pool',), ('pool', 'process')
# the histogram's bucket bounds as its `le` labels
LE = tuple(floatToGoString(bound) for bound in BOUNDS_SECONDS) + ('+Inf',)

# Every family: name (a counter's without _total), kind, labels, help.
FAMILIES = (
    ('fcgi_pool_requests', 'counter', POOL + ('source',),
     'Requests served, including by workers that have exited; source exact '
     '(scoreboard), sampled (seen at the socket) or mixed.'),
    ('fcgi_pool_accepted_connections', 'counter', POOL + ('source',),
     'Connections accepted, including by workers that have exited.'),
    ('fcgi_pool_processes', 'gauge', POOL + ('state',),
     'Running processes, by state (active: in a request; frozen: stopped by a '
     'signal outside a request).'),
    ('fcgi_pool_max_processes', 'gauge', POOL, 'The configured limit: numprocs.'),
    ('fcgi_pool_socket_open', 'gauge', POOL,
     '1 while the pool socket accepts connections.'),
    ('fcgi_pool_socket_held', 'gauge', POOL,
     '1 while the plugin keeps the socket open with no worker running.'),
    ('fcgi_pool_listen_queue', 'gauge', POOL,
     "Connections waiting in the pool socket's accept queue now."),
    ('fcgi_pool_max_listen_queue', 'gauge', POOL,
     'Highest listen_queue seen (sampled, about every sample_interval).'),
    ('fcgi_pool_listen_queue_length', 'gauge', POOL,
     "The accept queue's limit: the effective backlog."),
    ('fcgi_pool_listen_drops', 'counter', POOL,
     'Connections the kernel dropped on the pool socket (TCP only).'),
    ('fcgi_pool_max_active_processes', 'gauge', POOL,
     'Highest number of processes busy at once.'),
    ('fcgi_pool_slow_requests', 'counter', POOL,
     'Requests seen running past a slowlog timeout (fcgi-guard).'),
    ('fcgi_pool_terminated_requests', 'counter', POOL,
     'Requests ended by stopping their worker (fcgi-guard).'),
    ('fcgi_pool_connections', 'gauge', POOL,
     'Pool connections the workers hold open now.'),
    ('fcgi_pool_fairness', 'gauge', POOL,
     "Jain's index of the requests over the running workers (1: even)."),
    ('fcgi_pool_balance', 'gauge', POOL,
     'Most requests of one worker over the mean (1: even).'),
    ('fcgi_pool_start_time_seconds', 'gauge', POOL,
     "When the pool's counters started (supervisord start or reset)."),
    ('fcgi_pool_pm', 'gauge', POOL + ('pm', 'state'),
     "Always 1, labelled with the pool's process manager (static, dynamic, "
     'ondemand) and its state (active, watching, backoff, paused, static).'),
    ('fcgi_pool_pm_target', 'gauge', POOL, 'Workers the process manager wants running.'),
    ('fcgi_pool_pm_floor', 'gauge', POOL, 'Fewest workers the process manager runs.'),
    ('fcgi_pool_pm_ceiling', 'gauge', POOL, 'Most workers the process manager may run.'),
    ('fcgi_pool_max_children_reached', 'counter', POOL,
     'Times the pool wanted more workers than its ceiling allowed (as PHP-FPM counts).'),
    ('fcgi_pool_pm_spawns', 'counter', POOL, 'Workers the process manager started.'),
    ('fcgi_pool_pm_stops', 'counter', POOL, 'Workers the process manager stopped.'),
    ('fcgi_request_duration_seconds', 'histogram', POOL,
     'Wall time of finished requests, counted exactly by the cooperating '
     'workers in their scoreboard slots, exited workers included.'),
    # One sample per process, labelled with the state it is in (as
    # php-fpm_exporter does): a 0 for every other state would triple a
    # scrape's size and cost for nothing a query needs.
    ('fcgi_process_state', 'gauge', PROCESS + ('state',),
     "Always 1, labelled with the worker's state: %s (from its slot; sampled "
     'workers: running while holding a connection, else idle).'
     % ', '.join(PROCESS_STATES)),
    ('fcgi_process_pid', 'gauge', PROCESS, 'The process id; 0 while not running.'),
    ('fcgi_process_requests', 'counter', PROCESS + ('source',),
     'Requests served by this process since it started.'),
    ('fcgi_process_accepted_connections', 'counter', PROCESS + ('source',),
     'Connections accepted by this process since it started.'),
    ('fcgi_process_start_time_seconds', 'gauge', PROCESS,
     'When supervisor started this process.'),
    ('fcgi_process_connections', 'gauge', PROCESS,
     'Pool connections this process holds open now.'),
    ('fcgi_process_scoreboard_slot', 'gauge', PROCESS + ('status',),
     "Always 1, labelled with how the process's scoreboard slot read: ok, absent "
     '(the worker writes none) or unavailable (unreadable: exact figures left out).'),
    ('fcgi_process_request_duration_seconds', 'gauge', PROCESS,
     "The current request's time so far while busy, else the last one's."),
    ('fcgi_process_last_request_duration_seconds', 'gauge', PROCESS,
     "The last finished request's wall time (also while the next one runs)."),
    ('fcgi_process_last_request_cpu', 'gauge', PROCESS,
     'CPU of the last request, percent of one CPU over its wall time.'),
    ('fcgi_process_last_request_memory_bytes', 'gauge', PROCESS,
     'Peak RSS at the end of the last request.'),
    ('fcgi_process_exceptions', 'counter', PROCESS,
     'Requests whose application raised (answered 500).'),
    ('fcgi_process_respawns', 'counter', PROCESS,
     'Starts of this process after its first (since supervisord start or reset).'),
    ('fcgi_process_unexpected_exits', 'counter', PROCESS,
     'Exits with a code not in exitcodes, or before startsecs (BACKOFF).'),
    ('fcgi_process_recycles', 'counter', PROCESS,
     "Exits at the worker's own max-requests, and stops by fcgi-guard --max-requests."),
    ('fcgi_process_guard_kills', 'counter', PROCESS,
     'Stops by fcgi-guard --request-timeout (its request terminated).'),
)
# the process manager's fields, which the plugin adds to every pool's status
PM_FIELDS = (('fcgi_pool_pm_target', 'target'), ('fcgi_pool_pm_floor', 'floor'),
             ('fcgi_pool_pm_ceiling', 'ceiling'),
             ('fcgi_pool_max_children_reached', 'max_children_reached'),
             ('fcgi_pool_pm_spawns', 'spawns'), ('fcgi_pool_pm_stops', 'stops'))
# status field of each one-sample pool family; below 0: a figure the kernel
# cannot give (e.g. drops of a unix socket), left out
POOL_FIELDS = (
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
# the label values the last scrape escaped, for the next
ESCAPES = Kept(escape_value)
NUMBERS = Kept(floatToGoString)
# by dialect (8 at the most): the processes' lines its last scrape wrote
ROWS = {}


@functools.cache
def dialect(openmetrics, escaping):
    """FAMILIES' headers and templates in a format: 8 at the most (what
    `negotiate` returns), whatever the Accept headers are."""
    return Dialect(FAMILIES, openmetrics, escaping)


def respond(plugin, path, query, headers):
    """The page for httpserve.ROUTES: every pool, in the format asked."""
    body, content_type = render(pool_statuses(plugin), headers.get('accept', ''))
    return 200, content_type, body


def render(statuses, accept=''):
    """(body, content type) of a list of getPoolStatus structs."""
    openmetrics, escaping, content_type = negotiate(accept)
    page = Page(dialect(openmetrics, escaping), ESCAPES.scrape(), NUMBERS.scrape())
    memo = ROWS.setdefault((openmetrics, escaping), Kept()).swap()
    for status in statuses:
        _pool(status, page)
        metricrows.write(status['name'], status['processes'], page, memo)
    return page.text(), content_type


def _pool(s, page):
    add, escape = page.add, page.escape
    pool = (escape(s['name']),)
    source = pool + (escape(s['requests_source']),)
    add('fcgi_pool_requests', source, s['requests'])
    add('fcgi_pool_accepted_connections', source, s['accepted_conn'])
    for state, field in (('active', 'active_processes'), ('idle', 'idle_processes'),
                         (FROZEN, 'frozen_processes')):
        add('fcgi_pool_processes', pool + (escape(state),), s[field])
    add('fcgi_pool_max_processes', pool, s['max_processes'])
    page.histogram('fcgi_request_duration_seconds', pool, list(zip(
        LE, [count for _, count in s['request_duration_buckets']]
        + [s['request_duration_count']])), s['request_duration_sum'])
    add('fcgi_pool_socket_open', pool, int(s['socket_open']))
    add('fcgi_pool_socket_held', pool, int(s['socket_held']))
    for name, field in POOL_FIELDS:
        if s[field] >= 0:
            add(name, pool, s[field])
    if 'pm' in s:      # PoolMonitor's status alone has no process manager
        add('fcgi_pool_pm', pool + (escape(s['pm']), escape(s['pm_state'])), 1)
        for name, field in PM_FIELDS:
            add(name, pool, s[field])
