"""fcgi_status's text (report.py) of status dicts made by PoolMonitor itself
(the pool_status fixture: real slot files, a real listening socket), so a
change of the status schema cannot pass these tests unnoticed."""
import time

from supervisor_fcgi_ext.ctl import report


def rows(text):
    return [line for line in text.splitlines() if line.startswith('  app_')]


def test_shows_pool_figures_and_one_row_per_process(pool_status):
    pool = pool_status(requests=(20, 10), busy={0: ('GET', '/slow?sleep=2')})
    text = report.format_pool(pool)
    lines = text.splitlines()
    assert lines[0] == 'pool app  %s  (socket open)' % pool['socket']
    assert lines[1] == '  listen queue 0  max 0  backlog 16  drops 0'
    assert lines[2] == '  processes 2  active 1  idle 1  max active 1  frozen 0  limit 2'
    assert lines[3] == ('  accepted conn 31  requests 31 (exact)  fairness %.3f  '
                        'balance %.2f' % (pool['fairness'], pool['balance']))
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(pool['start_time']))
    assert lines[4] == ('  slow requests 0  terminated requests 0  since %s (0s)'
                        % started)
    assert lines[5].split() == ['NAME', 'PID', 'STATE', 'WORKER', 'CONN', 'REQS',
                                'SHARE', 'LAST', 'MS', 'REQUEST']
    busy, idle = rows(text)
    assert busy.split()[:6] == ['app_00', '100', 'RUNNING', 'running', '1', '21']
    assert busy.endswith(' GET /slow?sleep=2')
    assert '#' * report.BAR_WIDTH in busy
    assert idle.split()[:6] == ['app_01', '101', 'RUNNING', 'idle', '0', '10']
    assert ' ' + '#' * round(report.BAR_WIDTH * 10 / 21) + ' ' in idle
    duration_ms = pool['processes'][0]['request_duration'] / 1000.0
    assert ' %.1f ' % duration_ms in busy
    # the 30 finished requests took well under 5 ms each: both in the first bucket
    p50, p99 = pool['request_duration_p50'], pool['request_duration_p99']
    assert 0 < p50 < p99 <= 0.005
    mean = pool['request_duration_sum'] / 30
    assert lines[-2] == '  latency mean %s  p50 0-5 ms  p99 0-5 ms  (30 requests timed by ' \
        'their workers)' % report.format_seconds(mean)
    assert lines[-1] == '  respawns 0  unexpected exits 0  recycles 0  guard kills 0'


def test_latency_without_requests_and_in_seconds():
    assert report.format_seconds(-1) == '-'
    assert report.format_seconds(0.01234) == '12.3 ms'
    assert report.format_seconds(2.5) == '2.5 s'


def test_marks_sampled_counts_and_stopped_processes(pool_status):
    text = report.format_pool(pool_status(requests=(3,), sampled_connections=1,
                                          stopped=1))
    assert 'requests 4 (mixed)' in text
    exact, sampled, stopped = rows(text)
    assert sampled.split()[3:6] == ['running', '1', '~1']
    # a third of the largest's bar, then '-': a sampled worker has no request time
    assert sampled.split()[6:8] == ['#' * round(report.BAR_WIDTH / 3), '-']
    assert stopped.split()[:5] == ['app_02', '-', 'STOPPED', 'stopped', '0']
    assert text.endswith('  ~ sampled: connections seen held at the socket '
                         '(worker writes no scoreboard)')


def test_shows_warnings_and_a_closed_socket(pool_status):
    pool = pool_status(requests=(1,), unreadable=True, socket_open=False)
    text = report.format_pool(pool)
    assert text.splitlines()[0].endswith('(socket closed)')
    assert '  listen queue 0  max 0  backlog 16  drops -' in text
    [warning] = pool['warnings']
    assert warning.startswith('app_01: scoreboard slot unreadable: ')
    assert text.endswith('  warning: ' + warning)


def test_share_bar():
    assert report.share_bar(0, 10) == ''
    assert report.share_bar(1, 1000) == '#'
    assert report.share_bar(5, 0) == ''
    assert report.share_bar(5, 10, width=10) == '#####'


def test_format_duration():
    assert report.format_duration(5) == '5s'
    assert report.format_duration(75) == '1m15s'
    assert report.format_duration(7200) == '2h00m'
    assert report.format_duration(3 * 86400) == '3d00h'


def test_quantiles_are_the_buckets_they_fall_in():
    """10 requests of 1.0 s: all in the 1-2.5 s bucket, which is what fcgi_status
    says (the interpolated p50 would read 1.75 s)."""
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    pool = {'request_duration_count': 10, 'request_duration_sum': 10.005,
            'request_duration_buckets': [[b, 10 if b >= 2.5 else 0] for b in bounds]}
    assert report.quantile_bucket(0.5, pool) == '1-2.5 s'
    pool['request_duration_buckets'] = [[b, 9 if b < 10 else 9] for b in bounds]
    assert report.quantile_bucket(0.5, pool) == '0-5 ms'
    assert report.quantile_bucket(0.99, pool) == '> 10 s'
    pool['request_duration_buckets'] = [[b, 5 if b >= 0.25 else 0] for b in bounds]
    assert report.quantile_bucket(0.5, pool) == '100-250 ms'
    assert report.quantile_bucket(0.5, dict(pool, request_duration_count=0)) == '-'
