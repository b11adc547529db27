"""GET /fcgi/metrics from real supervisords: requests through real nginx to
fcgi-worker pools, scraped over the inet and the unix HTTP server, with and
without supervisor's password, on metrics_listen, across a reload, a
recycled worker and pools added and removed; `promtool check metrics`."""
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
import xmlrpc.client

import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.lab.harness import HarnessError, PoolSpec, Supervisor, free_port

from conftest import in_ci
from scrapes import (PASSWORD, USER, AuthSupervisor, basic, get, per_process, samples,
                     scrape, through_nginx, value, wait_counted)

@contextlib.contextmanager
def scraping(*targets):
    """Scrape the targets over and over meanwhile; yields the (status, body)
    list, a connection refused or cut (a body short of its Content-Length)
    counting as (None, its repr)."""
    results, stop = [], threading.Event()

    def scraper():
        while not stop.is_set():
            for target in targets:
                try:
                    status, _, body = get(target)
                    results.append((status, body))
                except (OSError, http.client.HTTPException) as e:
                    results.append((None, repr(e).encode()))
    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        yield results
    finally:
        stop.set()
        thread.join(30)


def answered_or_refused(results):
    """Every scrape a complete, parsing 200, or a clean connection failure."""
    for status, body in results:
        assert status in (200, None), body
        if status == 200:
            samples(body)
    return [body for status, body in results if status == 200]


def test_requests_through_nginx_are_counted_exactly(supervisor_factory, nginx_factory):
    sup = supervisor_factory([PoolSpec(numprocs=3)], unix_http_server=True)
    nginx = nginx_factory(sup.pool('app').socket_url)
    through_nginx(nginx, 25)
    for target in (sup.url, sup.unix_socket_path):
        scraped = wait_counted(target, 25)
        counts = per_process(scraped)
        assert sorted(counts) == ['app_00', 'app_01', 'app_02']
        assert sum(counts.values()) == 25
        assert value(scraped, 'fcgi_pool_max_processes', pool='app') == 3
        assert value(scraped, 'fcgi_pool_processes', pool='app', state='idle') == 3
        assert value(scraped, 'fcgi_request_duration_seconds_count', pool='app') == 25
    pids = sup.pids('app')
    for name, pid in pids.items():
        assert value(scraped, 'fcgi_process_pid', pool='app', process=name) == pid


def test_a_corrupt_slot_costs_only_that_workers_exact_figures(supervisor_factory,
                                                              nginx_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    through_nginx(nginx_factory(sup.pool('app').socket_url), 6)
    wait_counted(sup.url, 6)
    pid = sup.pids('app')['app_01']
    with open('/proc/%d/environ' % pid, 'rb') as f:
        environ = dict(item.split(b'=', 1) for item in f.read().split(b'\0') if item)
    board = environ[scoreboard.ENV_VAR.encode()].decode()
    with open(scoreboard.slot_path(board, 'app', pid), 'r+b') as f:
        f.write(b'garbage!')            # its magic: the worker never rewrites it
    scraped = scrape(sup.url)
    assert value(scraped, 'fcgi_process_scoreboard_slot', pool='app', process='app_01',
                 status='unavailable') == 1
    assert value(scraped, 'fcgi_process_scoreboard_slot', pool='app', process='app_00',
                 status='ok') == 1
    exact = ('fcgi_process_last_request_memory_bytes',
             'fcgi_process_request_duration_seconds', 'fcgi_process_exceptions_total')
    for name in exact:
        assert value(scraped, name, pool='app', process='app_00') is not None
        assert value(scraped, name, pool='app', process='app_01') is None
    assert value(scraped, 'fcgi_process_requests_total', pool='app',
                 process='app_01', source='sampled') is not None
    assert sup.rpc.supervisor.getState()['statename'] == 'RUNNING'


def test_the_histograms_count_is_the_requests_and_fcgi_status_shows_percentiles(
        supervisor_factory, nginx_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    nginx = nginx_factory(sup.pool('app').socket_url)
    through_nginx(nginx, 8)
    for i in range(2):       # two requests of 0.3 s at least
        with urllib.request.urlopen('%s/s%d?sleep=0.3' % (nginx.url, i), timeout=10) as r:
            assert r.status == 200
    scraped = wait_counted(sup.url, 10)
    assert value(scraped, 'fcgi_request_duration_seconds_count', pool='app') == 10
    assert value(scraped, 'fcgi_request_duration_seconds_bucket', pool='app', le='+Inf') == 10
    # the 8 quick ones under 0.25 s, the slow ones over it (and under 2.5 s)
    assert value(scraped, 'fcgi_request_duration_seconds_bucket', pool='app', le='0.25') == 8
    assert value(scraped, 'fcgi_request_duration_seconds_bucket', pool='app', le='2.5') == 10
    assert 0.6 <= value(scraped, 'fcgi_request_duration_seconds_sum', pool='app') < 5
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert status['request_duration_count'] == status['requests'] == 10
    assert 0 < status['request_duration_p50'] < 0.25 < status['request_duration_p99'] < 2.5
    assert status['max_processes'] == 2
    assert [p['slot_status'] for p in status['processes']] == ['ok', 'ok']
    out = sup.ctl('fcgi_status', 'app', check=True).stdout
    assert '  latency mean ' in out and '(10 requests timed by their workers)' in out


def test_lifecycle_counters_from_real_exits_never_go_down(supervisor_factory, nginx_factory):
    # one worker that exits after 3 requests of its own, restarted every time
    sup = supervisor_factory([PoolSpec(command='fcgi-worker --max-requests 3', numprocs=1,
                                       extra={'autorestart': 'true', 'startsecs': '0'})])
    nginx = nginx_factory(sup.pool('app').socket_url)
    through_nginx(nginx, 7)       # recycled after the 3rd and the 6th

    def counted(**expected):
        def check():
            scraped = scrape(sup.url)
            got = {name: value(scraped, 'fcgi_process_%s_total' % name, pool='app',
                               process='app_00') for name in expected}
            return scraped if got == expected else None
        return sup.wait_for(check, 20, 'lifecycle counts %r' % expected)
    scraped = counted(recycles=2, respawns=2, unexpected_exits=0, guard_kills=0)
    # the exited workers' requests stay in both the counter and the histogram
    assert value(scraped, 'fcgi_pool_requests_total', pool='app', source='exact') == 7
    assert value(scraped, 'fcgi_request_duration_seconds_count', pool='app') == 7
    sup.wait_running()
    os.kill(sup.pids('app')['app_00'], signal.SIGKILL)
    scraped = counted(recycles=2, respawns=3, unexpected_exits=1, guard_kills=0)
    assert value(scraped, 'fcgi_request_duration_seconds_count', pool='app') == 7
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['respawns'], status['unexpected_exits'], status['recycles']) == (3, 1, 2)


def test_unknown_fcgi_path_is_404_and_others_are_supervisors(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=1)])
    status, _, body = get(sup.url, '/fcgi/nope')
    assert status == 404 and body.startswith(b'fcgi: no page /fcgi/nope (known: ')
    assert get(sup.url, '/fcgi/metrics', method='POST')[0] == 405
    assert get(sup.url, '/')[0] == 200                 # supervisor's web UI still
    assert sup.rpc.fcgi.getAPIVersion()


def test_password_is_asked_for_exactly_like_rpc2(nginx_factory):
    with AuthSupervisor([PoolSpec(numprocs=2)], unix_http_server=True) as sup:
        through_nginx(nginx_factory(sup.pool('app').socket_url), 6)
        for target in (sup.url, sup.unix_socket_path):
            for headers in ({}, basic(USER, 'wrong'), basic('nobody', PASSWORD)):
                theirs = get(target, '/RPC2', headers=headers, method='POST')
                ours = get(target, '/fcgi/metrics', headers=headers)
                assert ours[0] == theirs[0] == 401
                assert ours[1]['WWW-Authenticate'] == theirs[1]['WWW-Authenticate']
                assert ours[2] == theirs[2]
            scraped = wait_counted(target, 6, headers=basic(USER, PASSWORD))
            assert sum(per_process(scraped).values()) == 6
            assert get(target, '/fcgi/nope')[0] == 401   # no probing for paths


def test_promtool_accepts_a_real_scrape(supervisor_factory, nginx_factory):
    promtool = shutil.which('promtool')
    if promtool is None:
        message = 'promtool not found: apt-get install prometheus'
        pytest.fail(message) if in_ci() else pytest.skip(message)
    sup = supervisor_factory([PoolSpec(numprocs=2),
                              PoolSpec(name='other', command='sleep 1000', numprocs=2,
                                       socket='unix')])
    through_nginx(nginx_factory(sup.pool('app').socket_url), 3)
    status, headers, body = get(sup.url)
    assert headers['Content-Type'].startswith('text/plain; version=0.0.4')
    # promtool lints the Prometheus text format (OpenMetrics is not its input)
    result = subprocess.run([promtool, 'check', 'metrics'], input=body,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, (result.stdout, result.stderr)
    status, headers, body = get(sup.url, headers={
        'Accept': 'application/openmetrics-text; version=1.0.0'})
    assert headers['Content-Type'].startswith('application/openmetrics-text')
    names = {f.name for f in openmetrics_families(body.decode())}   # strict parser
    assert {'fcgi_pool_requests', 'fcgi_process_state'} <= names
    scraped = scrape(sup.url)
    assert value(scraped, 'fcgi_pool_requests_total', pool='other',
                 source='sampled') == 0
    assert value(scraped, 'fcgi_process_scoreboard_slot', pool='other',
                 process='other_00', status='absent') == 1


def test_metrics_listen_serves_a_unix_only_supervisord_across_a_reload(
        supervisor_factory, nginx_factory):
    port = free_port()
    target = 'http://127.0.0.1:%d' % port
    sup = supervisor_factory([PoolSpec(numprocs=2)], unix_http_server=True,
                             plugin_options={'metrics_listen': '127.0.0.1:%d' % port})
    nginx = nginx_factory(sup.pool('app').socket_url)
    through_nginx(nginx, 4)
    wait_counted(target, 4)
    assert get(target, '/fcgi/status')[0] == 404       # figures only, no URIs
    assert 'no authentication' in open(sup.log_path).read()
    pid = sup.pid

    def reloaded():
        try:
            return len(sup.pids('app')) == 2
        except (OSError, xmlrpc.client.Error):   # SHUTDOWN_STATE while it reloads
            return False
    with scraping(target, sup.url, sup.unix_socket_path) as results:
        sup.ctl('reload', check=True)
        sup.wait_for(reloaded, 30, 'both workers running again after the reload')
    assert len(answered_or_refused(results)) > 3
    assert sup.pid == pid
    through_nginx(nginx, 3)
    for where in (target, sup.url, sup.unix_socket_path):
        # a reload starts the counters afresh, as it starts new workers
        assert sum(per_process(wait_counted(where, 3)).values()) == 3


def test_pool_counters_do_not_go_down_when_a_worker_is_recycled(
        supervisor_factory, nginx_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    nginx = nginx_factory(sup.pool('app').socket_url)
    through_nginx(nginx, 10)
    before = per_process(wait_counted(sup.url, 10))
    start = value(scrape(sup.url), 'fcgi_process_start_time_seconds', pool='app',
                  process='app_00')
    sup.ctl('restart', 'app:app_00', check=True)
    sup.wait_running()
    after = wait_counted(sup.url, 10)       # still 10, with app_00 new
    assert value(after, 'fcgi_request_duration_seconds_count', pool='app') == 10
    assert value(after, 'fcgi_process_respawns_total', pool='app', process='app_00') == 1
    assert per_process(after)['app_00'] == 0
    assert per_process(after)['app_01'] == before['app_01']
    assert value(after, 'fcgi_process_start_time_seconds', pool='app',
                 process='app_00') > start
    through_nginx(nginx, 4)
    assert sum(per_process(wait_counted(sup.url, 14)).values()) == 14 - before['app_00']


def test_a_bad_metrics_listen_stops_supervisord_with_one_line(supervisor_factory):
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    try:
        for setting, reason in (
                ('localhost:9253', "metrics_listen = 'localhost:9253' is refused "
                                   "(allowed: IP:PORT"),
                ('127.0.0.1:%d' % taken.getsockname()[1],
                 "metrics_listen = '127.0.0.1:%d' cannot be used: Address already "
                 "in use" % taken.getsockname()[1])):
            sup = Supervisor([PoolSpec(command='sleep 1000', numprocs=1)],
                             plugin_options={'metrics_listen': setting})
            with pytest.raises(HarnessError) as info:
                sup.start(timeout=10)     # stops and cleans up when it fails
            assert reason in str(info.value)   # the log tail is in the message
    finally:
        taken.close()


def test_scrapes_while_pools_are_added_and_removed_answer(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=2),
                              PoolSpec(name='extra', command='sleep 1000', numprocs=2)])
    with scraping(sup.url) as results:
        for _ in range(3):
            sup.ctl('stop', 'extra:*', check=True)
            sup.ctl('remove', 'extra', check=True)
            sup.ctl('add', 'extra', check=True)
            sup.wait_running()
    assert len(results) > 10
    assert all(status == 200 for status, _ in results)
    bodies = answered_or_refused(results)
    assert any(b'pool="extra"' not in body for body in bodies)
    assert all(b'pool="app"' in body for body in bodies)
    assert 'Traceback' not in open(sup.log_path).read()
