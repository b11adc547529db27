"""Pool status as text for people: `supervisorctl fcgi_status`, fcgi-experiment."""

import time

__all__ = ['format_pool', 'share_bar', 'format_duration', 'format_seconds',
           'quantile_bucket']

BAR_WIDTH = 20


def share_bar(count, largest, width=BAR_WIDTH):
    """A bar as long as count's share of the largest count."""
    if largest <= 0 or count <= 0:
        return ''
    return '#' * max(1, round(width * count / largest))


def format_duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return '%ds' % seconds
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return '%dm%02ds' % (minutes, seconds)
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return '%dh%02dm' % (hours, minutes)
    return '%dd%02dh' % divmod(hours, 24)


def _figure(value):
    return '-' if value == -1 else str(value)


def format_seconds(seconds):
    """A request's time, to 3 figures; '-' for none (-1: no request timed)."""
    if seconds < 0:
        return '-'
    if seconds < 1:
        return '%.3g ms' % (seconds * 1000)
    return '%.3g s' % seconds


def quantile_bucket(q, pool):
    """The histogram bucket the ``q`` quantile falls in, as a range: all a
    histogram knows.  (The status's p50/p99 interpolate within it, as
    Prometheus does: a pool of 1.0 s requests, all in the 1-2.5 s bucket,
    would read p50 1.75 s.)"""
    count = pool['request_duration_count']
    if not count:
        return '-'
    low = 0.0
    for bound, at_or_under in pool['request_duration_buckets']:
        if at_or_under >= q * count:
            if bound < 1:
                return '%g-%g ms' % (low * 1000, bound * 1000)
            return '%g-%g s' % (low, bound)
        low = bound
    return '> %g s' % low


def _latency(pool):
    count = pool['request_duration_count']
    mean = pool['request_duration_sum'] / count if count else -1
    return '  latency mean %s  p50 %s  p99 %s  (%d requests timed by their workers)' % (
        format_seconds(mean), quantile_bucket(0.5, pool), quantile_bucket(0.99, pool),
        count)


def _lifecycle(pool):
    return '  respawns %d  unexpected exits %d  recycles %d  guard kills %d' % (
        pool['respawns'], pool['unexpected_exits'], pool['recycles'], pool['guard_kills'])


def format_pool(pool):
    """The text of one pool: its figures, then one row per process."""
    socket_state = 'open' if pool['socket_open'] else 'closed'
    if pool.get('socket_held'):
        socket_state += ', held'
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(pool['start_time']))
    lines = [
        'pool %s  %s  (socket %s)' % (pool['name'], pool['socket'], socket_state),
        '  listen queue %s  max %s  backlog %s  drops %s' % (
            _figure(pool['listen_queue']), pool['max_listen_queue'],
            _figure(pool['listen_queue_len']), _figure(pool['listen_drops'])),
        '  processes %d  active %d  idle %d  max active %d  frozen %d  limit %d' % (
            pool['total_processes'], pool['active_processes'],
            pool['idle_processes'], pool['max_active_processes'],
            pool['frozen_processes'], pool['max_processes']),
        '  accepted conn %d  requests %d (%s)  fairness %.3f  balance %.2f' % (
            pool['accepted_conn'], pool['requests'], pool['requests_source'],
            pool['fairness'], pool['balance']),
        '  slow requests %d  terminated requests %d  since %s (%s)' % (
            pool['slow_requests'], pool['terminated_requests'], started,
            format_duration(pool['start_since'])),
    ]
    processes = pool['processes']
    largest = max([p['requests'] for p in processes] or [0])
    name_width = max([len(p['name']) for p in processes] + [4])
    header = '  %-*s %7s %-8s %-9s %4s %7s  %-*s %9s  %s' % (
        name_width, 'NAME', 'PID', 'STATE', 'WORKER', 'CONN', 'REQS',
        BAR_WIDTH, 'SHARE', 'LAST MS', 'REQUEST')
    lines.append(header)
    for p in processes:
        request = ('%s %s' % (p['request_method'], p['request_uri'])).strip()
        sampled = '~' if p['requests_source'] == 'sampled' and p['pid'] else ''
        lines.append('  %-*s %7s %-8s %-9s %4s %7s  %-*s %9s  %s' % (
            name_width, p['name'], p['pid'] or '-', p['state'][:8],
            p['worker_state'] or '-', _figure(p['connections']),
            '%s%d' % (sampled, p['requests']), BAR_WIDTH,
            share_bar(p['requests'], largest),
            '%.1f' % (p['request_duration'] / 1000.0)
            if p['requests_source'] == 'exact' else '-',
            request))
    lines += [_latency(pool), _lifecycle(pool)]
    if 'pm' in pool:
        lines.append('  process manager %s (%s)  target %d  floor %d  ceiling %d  '
                     'max children reached %d  spawns %d  stops %d' % (
                         pool['pm'], pool['pm_state'], pool['target'], pool['floor'],
                         pool['ceiling'], pool['max_children_reached'], pool['spawns'],
                         pool['stops']))
    if any(p['requests_source'] == 'sampled' and p['pid'] for p in processes):
        lines.append('  ~ sampled: connections seen held at the socket '
                     '(worker writes no scoreboard)')
    for warning in pool.get('warnings', []):
        lines.append('  warning: %s' % warning)
    return '\n'.join(lines)
