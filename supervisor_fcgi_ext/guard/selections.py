"""What the guard acts on, chosen from one pool's status and nothing else.

Pure functions of a status dict as fcgi.getPoolStatus returns it (and of
what the guard already handles), so each policy's choice is tested on the
status the real PoolMonitor builds; listener.py acts on what they return.
"""
from supervisor_fcgi_ext.common.scoreboard import BUSY_STATES

__all__ = ['REQUEST_STATES', 'process_name', 'in_request', 'slow_requests',
           'stuck_requests', 'next_recycle', 'queue_figures', 'is_crash']

# Timeouts and the slowlog apply once the app runs: while a worker reads a
# request its slot still names the last one, and a silent peer is the
# worker's own I/O timeout's business (fcgi-worker --timeout).
REQUEST_STATES = BUSY_STATES - {'reading'}


def process_name(status, proc):
    """supervisor's 'group:process' name of a worker of this pool."""
    return '%s:%s' % (status['name'], proc['name'])


def in_request(status, handled=()):
    """RUNNING workers running a request, but those named in ``handled``."""
    return [proc for proc in status['processes']
            if proc['state'] == 'RUNNING' and proc['worker_state'] in REQUEST_STATES
            and process_name(status, proc) not in handled]


def slow_requests(status, seconds, seen, handled=()):
    """(new, over): the workers whose request runs ``seconds`` or more and
    is not in ``seen`` yet, and the keys of all such requests (the next
    check's ``seen``).  'requests' counts the request in flight, so
    (pid, requests) names one request: it is logged once however long."""
    limit = seconds * 1e6
    over, new = set(), []
    for proc in in_request(status, handled):
        if proc['request_duration'] >= limit:
            key = (proc['pid'], proc['requests'])
            over.add(key)
            if key not in seen:
                new.append(proc)
    return new, over


def stuck_requests(status, seconds, handled=()):
    """Workers whose request has run ``seconds`` or more."""
    limit = seconds * 1e6
    return [proc for proc in in_request(status, handled)
            if proc['request_duration'] >= limit]


def next_recycle(status, max_requests, handled=()):
    """The worker to recycle now, or None: one past ``max_requests``, only
    while another RUNNING worker not in ``handled`` keeps the pool serving;
    an idle one first (its stop is immediate), then the one with most."""
    running = [proc for proc in status['processes'] if proc['state'] == 'RUNNING'
               and process_name(status, proc) not in handled]
    due = [proc for proc in running if proc['requests'] >= max_requests]
    if not due or len(running) < 2:
        return None
    return min(due, key=lambda proc: (proc['worker_state'] in BUSY_STATES,
                                      -proc['requests']))


def queue_figures(status):
    """(queue, backlog, drops) as rules.QueueWatch.check takes them."""
    return status['listen_queue'], status['listen_queue_len'], status['listen_drops']


def is_crash(state, fields):
    """A PROCESS_STATE event that is an unexpected exit of a worker."""
    return state == 'BACKOFF' or (state == 'EXITED' and fields.get('expected') == '0')
