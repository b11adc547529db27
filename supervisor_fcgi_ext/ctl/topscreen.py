"""What `supervisorctl fcgi_top` shows, as plain functions: status dicts, the
previous reading and a width in, lines of text out (top.py draws them).

A rate needs two readings: a worker's is counted by pid (a respawned worker
starts again), a pool's only when its counter did not go down (a reset or a
reloaded supervisord); otherwise it shows '-'.
"""
import time
import unicodedata
from dataclasses import dataclass, field

from supervisor_fcgi_ext.common.scoreboard import BUSY_STATES
from supervisor_fcgi_ext.common.text import safe_text
from supervisor_fcgi_ext.ctl.report import format_duration

__all__ = ['Reading', 'SORT_KEYS', 'count_respawns', 'render', 'clip', 'text_width']

# key: (what the footer calls it, the worker's sort value, largest first)
SORT_KEYS = {
    'n': ('name', lambda p, rate: (p['name'],), False),
    'r': ('requests', lambda p, rate: (p['requests'],), True),
    's': ('rate', lambda p, rate: (rate if rate is not None else -1,), True),
    'd': ('duration', lambda p, rate: (p['request_duration'],), True),
    'm': ('memory', lambda p, rate: (p['last_request_memory'],), True),
}
MIN_REQUEST = 12   # narrower than this, the REQUEST column goes
NAME_MAX = 24


@dataclass
class Reading:
    """One answer of supervisord, and when (time.monotonic()) it came;
    missing: pools asked for by name that supervisord no longer has."""
    pools: list
    when: float = field(default_factory=time.monotonic)
    missing: list = field(default_factory=list)

    def pool(self, name):
        for pool in self.pools:
            if pool['name'] == name:
                return pool
        return None


def count_respawns(previous, current, counts):
    """Add to counts[(pool, process)] each process whose pid changed to another
    live pid since ``previous`` (both Readings); returns counts."""
    if previous is None:
        return counts
    for pool in current.pools:
        before = previous.pool(pool['name'])
        if before is None:
            continue
        old = {p['name']: p['pid'] for p in before['processes']}
        for p in pool['processes']:
            if p['pid'] and old.get(p['name']) not in (None, p['pid']):
                counts[(pool['name'], p['name'])] = \
                    counts.get((pool['name'], p['name']), 0) + 1
    return counts


def _rate(now, then, seconds):
    if then is None or seconds <= 0 or now < then:
        return None
    return (now - then) / seconds


def _show_rate(rate):
    return '-' if rate is None else '%.1f' % rate


def _duration(us):
    if us < 1000:
        return '%dus' % us
    return '%.1fms' % (us / 1000) if us < 1000000 else '%.2fs' % (us / 1e6)


def text_width(text):
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in 'WF' else 1 for c in text)


def clip(text, width):
    """``text`` made safe and cut to ``width`` terminal cells (None: no limit)."""
    text = safe_text(text)
    if width is None or text_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        cells = text_width(char)
        if used + cells > width:
            break
        out.append(char)
        used += cells
    return ''.join(out)


def _flow(parts, width):
    """Parts joined by two spaces, a new line where the next would not fit."""
    lines = []
    for part in parts:
        if lines and (width is None or text_width(lines[-1]) + 2 + text_width(part) <= width):
            lines[-1] += '  ' + part
        else:
            lines.append(part)
    return lines


def _pool_header(pool, rates, first, width):
    socket_state = 'open' if pool['socket_open'] else 'closed'
    queue = lambda v: '-' if v == -1 else str(v)
    groups = [
        ['pool %s' % pool['name'], pool['socket'], 'socket %s' % socket_state,
         'up %s' % format_duration(pool['start_since'])],
        ['queue %s/%s' % (queue(pool['listen_queue']), queue(pool['listen_queue_len'])),
         'max %s' % pool['max_listen_queue'], 'drops %s' % queue(pool['listen_drops']),
         'procs %d of %d: %d active %d idle' % (
             pool['total_processes'], len(pool['processes']),
             pool['active_processes'], pool['idle_processes']),
         'max active %d' % pool['max_active_processes']],
        ['requests %d (%s/s)' % (pool['requests'], _show_rate(rates.get('requests'))),
         'accepted %d (%s/s)' % (pool['accepted_conn'],
                                 _show_rate(rates.get('accepted_conn'))),
         'fairness %.3f' % pool['fairness'], 'slow %d' % pool['slow_requests'],
         'ended %d' % pool['terminated_requests']],
    ]
    if first:
        groups.append(['(no rate yet: it needs a second reading)'])
    return [line for parts in groups for line in _flow(parts, width)]


def _columns(name_width):
    """(title, width, right aligned, value(process, rate, respawns)); the
    order is the order they drop in on a narrow terminal, last first."""
    busy = lambda p: p['worker_state'] in BUSY_STATES
    exact = lambda p: p['requests_source'] == 'exact'
    return [
        ('NAME', name_width, False, lambda p, r, n: p['name']),
        ('PID', 7, True, lambda p, r, n: str(p['pid'] or '-')),
        ('STATE', 9, False, lambda p, r, n: p['worker_state'] or '-'),
        ('REQS', 8, True, lambda p, r, n: ('' if exact(p) else '~') + str(p['requests'])),
        ('REQ/S', 7, True, lambda p, r, n: _show_rate(r)),
        ('DUR', 8, True, lambda p, r, n: _duration(p['request_duration'])
         if exact(p) else '-'),
        ('RSS', 8, True, lambda p, r, n: '%.1fM' % (p['last_request_memory'] / 1048576)
         if p['last_request_memory'] > 0 else '-'),
        ('CPU%', 5, True, lambda p, r, n: '%.0f' % p['last_request_cpu']
         if exact(p) else '-'),
        ('RESP', 5, True, lambda p, r, n: str(n)),
        ('REQUEST', MIN_REQUEST, False, lambda p, r, n: (
            '%s %s' % (p['request_method'], p['request_uri'])).strip() if busy(p) else ''),
    ]


def _fit(columns, width):
    """The columns that fit in ``width`` (REQUEST then takes the rest)."""
    if width is None:
        return columns
    kept = list(columns)
    drop_order = ['RESP', 'CPU%', 'RSS', 'REQUEST', 'DUR', 'REQ/S', 'REQS', 'STATE', 'PID']
    while kept and sum(c[1] + 1 for c in kept) - 1 > width and drop_order:
        title = drop_order.pop(0)
        kept = [c for c in kept if c[0] != title]
    return kept


def _cell(text, width, right, last):
    if last:
        return text
    text = clip(text, width)
    pad = ' ' * max(0, width - text_width(text))
    return pad + text if right else text + pad


def _worker_lines(pool, rates, respawns, sort, width):
    processes = pool['processes']
    name_width = min(NAME_MAX, max([len(p['name']) for p in processes] + [4]))
    columns = _fit(_columns(name_width), width)
    worker_rates = rates.get('workers', {})
    _, key, largest_first = SORT_KEYS[sort]
    ordered = sorted(processes, key=lambda p: key(p, worker_rates.get(p['pid'])),
                     reverse=largest_first)
    lines = [' '.join(_cell(title, w, right, i == len(columns) - 1 and title == 'REQUEST')
                      for i, (title, w, right, _) in enumerate(columns))]
    for p in ordered:
        rate, spawned = worker_rates.get(p['pid']), respawns.get((pool['name'], p['name']), 0)
        lines.append(' '.join(
            _cell(value(p, rate, spawned), w, right, title == 'REQUEST')
            for title, w, right, value in columns))
    return lines


def pool_rates(pool, previous, now):
    """{'requests': r/s, 'accepted_conn': r/s, 'workers': {pid: r/s}}, or {}."""
    before = previous.pool(pool['name']) if previous is not None else None
    if before is None:
        return {}
    seconds = now - previous.when
    old = {p['pid']: p['requests'] for p in before['processes'] if p['pid']}
    return {
        'requests': _rate(pool['requests'], before['requests'], seconds),
        'accepted_conn': _rate(pool['accepted_conn'], before['accepted_conn'], seconds),
        'workers': {p['pid']: _rate(p['requests'], old.get(p['pid']), seconds)
                    for p in pool['processes'] if p['pid']},
    }


def render(current, previous, width=None, sort='n', respawns=None, title=''):
    """The screen: a title line, then per pool its header and worker rows.

    ``current``/``previous``: Readings (previous None on the first screen);
    width None: no limit (plain mode to a file).  Every line fits ``width``.
    """
    respawns = respawns or {}
    lines = [title] if title else []
    for pool in current.pools:
        rates = pool_rates(pool, previous, current.when)
        lines += _pool_header(pool, rates, previous is None, width)
        lines += _worker_lines(pool, rates, respawns, sort, width)
        lines += ['  warning: %s' % w for w in pool.get('warnings', [])]
        lines.append('')
    lines += ['pool %s: not found (removed?)' % name for name in current.missing]
    if not current.pools and not current.missing:
        lines.append('No fcgi-program pools configured')
    return [clip(line, width) for line in lines]
