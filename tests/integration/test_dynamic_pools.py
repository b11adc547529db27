"""Pools that size themselves, on real supervisord, nginx and workers:
ondemand pools activated by their first connection, a dynamic pool under a
burst, fcgi_scale under a steady stream."""
import os
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import BIN_DIR, HarnessError, PoolSpec, Supervisor
from supervisor_fcgi_ext.lab.loadstream import RequestStream


def states(sup, pool='app'):
    return {i['name']: i['statename']
            for i in sup.rpc.supervisor.getAllProcessInfo() if i['group'] == pool}


def live(sup, pool='app'):
    return sorted(n for n, s in states(sup, pool).items()
                  if s in ('STARTING', 'RUNNING', 'STOPPING'))


def get(url, timeout=60):
    """(status, body, seconds) of one GET through nginx."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.monotonic() - started


def wait_for_start_servers(sup, count):
    """Until ``count`` workers run and the rest stay stopped."""
    sup.wait_for(lambda: len(live(sup)) == count and
                 set(states(sup).values()) == {'RUNNING', 'STOPPED'}, 15,
                 'start_servers workers running')


@pytest.fixture
def pm_pool(supervisor_factory, nginx_factory):
    """make(options, numprocs, command) -> (Supervisor, Nginx) for pool app."""
    def make(options, numprocs=4, command='fcgi-worker', startsecs=0,
             extra_sections='', socket='tcp', **plugin):
        spec = PoolSpec('app', command, numprocs=numprocs, socket=socket,
                        extra={'stopwaitsecs': 10, 'startsecs': startsecs})
        plugin_options = {'app.' + k: v for k, v in options.items()}
        plugin_options.update(plugin)
        sup = supervisor_factory([spec], wait_running=False,
                                 plugin_options=plugin_options,
                                 extra_sections=extra_sections)
        return sup, nginx_factory(spec.socket_url)
    return make


@pytest.mark.parametrize('worker, socket', [('fcgi-worker', 'tcp'), ('flup', 'tcp'),
                                            ('fcgi-worker', 'unix')])
def test_ondemand_pool_starts_on_first_connection_and_idles_out(pm_pool, worker, socket,
                                                                flupapp_command):
    command = flupapp_command if worker == 'flup' else 'fcgi-worker'
    sup, nginx = pm_pool({'pm': 'ondemand', 'pm.process_idle_timeout': '2'},
                         command=command, socket=socket)
    time.sleep(1.0)
    assert live(sup) == [], states(sup)
    assert set(states(sup).values()) == {'STOPPED'}
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['pm'], status['total_processes'], status['socket_open']) == \
        ('ondemand', 0, True)

    code, body, _ = get(nginx.url + '/')
    assert code == 200, body
    assert len(live(sup)) == 1
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['spawns'], status['floor'], status['ceiling']) == (1, 0, 4)

    # idle for longer than process_idle_timeout: the worker goes, gracefully
    sup.wait_for(lambda: live(sup) == [], 15, 'the idle worker stopped')
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['stops'], status['socket_open']) == (1, True)
    # and the next connection starts one again
    code, body, _ = get(nginx.url + '/')
    assert code == 200, body
    assert sup.rpc.fcgi.getPoolStatus('app')['spawns'] == 2


def test_stopped_ondemand_pool_stays_stopped_until_started(pm_pool):
    sup, nginx = pm_pool({'pm': 'ondemand', 'pm.process_idle_timeout': '30'},
                         numprocs=2)
    assert get(nginx.url + '/')[0] == 200
    sup.ctl('stop', 'app:*', check=True)
    assert live(sup) == []
    assert sup.rpc.fcgi.getPoolStatus('app')['pm_state'] == 'paused'
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=get(nginx.url + '/')),
                              daemon=True)
    thread.start()
    time.sleep(2.0)   # the connection waits in the held socket's backlog
    assert live(sup) == [], 'the manager started a worker of a stopped pool'
    sup.ctl('start', 'app:*', check=True)
    thread.join(30)
    assert box['r'][0] == 200


def test_dynamic_pool_grows_under_a_burst_and_shrinks_back(pm_pool):
    sup, nginx = pm_pool({'pm': 'dynamic', 'pm.start_servers': '2',
                          'pm.min_spare_servers': '2', 'pm.max_spare_servers': '4'},
                         numprocs=12)
    wait_for_start_servers(sup, 2)
    results = []
    lock = threading.Lock()

    def one():
        outcome = get(nginx.url + '/?sleep=1', timeout=120)
        with lock:
            results.append(outcome)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(60)]
    for thread in threads:
        thread.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        status = sup.rpc.fcgi.getPoolStatus('app')
        peak = max(peak, status['total_processes'])
        time.sleep(0.2)
    failed = [r for r in results if r[0] != 200]
    assert (len(results), failed) == (60, [])
    assert 2 < peak <= 12
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert status['max_children_reached'] >= 1, status
    assert status['spawns'] >= peak - 2
    shown = sup.ctl('fcgi_status', 'app', check=True).stdout
    assert '  process manager dynamic (' in shown and '  ceiling 12  ' in shown
    with urllib.request.urlopen(sup.url + '/fcgi/metrics', timeout=10) as response:
        scraped = response.read().decode()
    assert 'fcgi_pool_pm{pm="dynamic",pool="app",state=' in scraped   # labels sorted
    assert 'fcgi_pool_pm_ceiling{pool="app"} 12.0' in scraped
    reached = [l for l in scraped.splitlines()
               if l.startswith('fcgi_pool_max_children_reached_total{pool="app"}')]
    assert reached and float(reached[0].split()[-1]) >= 1
    # after the burst: back within the spare range, idlest stopped one a second
    sup.wait_for(lambda: sup.rpc.fcgi.getPoolStatus('app')['idle_processes'] <= 4,
                 30, 'idle workers back to max_spare_servers')
    assert sup.rpc.fcgi.getPoolStatus('app')['stops'] >= 1


def test_fcgi_scale_under_a_steady_stream_keeps_running_workers(pm_pool):
    sup, nginx = pm_pool({}, numprocs=6)
    sup.wait_running()
    before = sup.pids('app')
    stream = RequestStream(nginx.port, rate=150, clients=6)
    with stream:
        assert stream.wait_requests(50, 10), 'no requests got through'
        out = sup.ctl('fcgi_scale', 'app', '2')
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip() == 'app: pm static, target 2, floor 2, ceiling 2'
        sup.wait_for(lambda: len(live(sup)) == 2, 20, 'two workers left')
        two = sup.pids('app')
        assert set(two.items()) <= set(before.items())
        time.sleep(1.0)
        out = sup.ctl('fcgi_scale', 'app', '6')
        assert out.returncode == 0, out.stdout + out.stderr
        sup.wait_for(lambda: len(sup.pids('app')) == 6, 20, 'six workers again')
        time.sleep(1.0)
    after = sup.pids('app')
    assert set(two.items()) <= set(after.items())
    assert (stream.result.failed, stream.result.statuses) == (0, {})
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['stops'], status['spawns'], status['target']) == (4, 4, 6)


GUARD = """
[eventlistener:guard]
command = %s --request-timeout 2 --grace 1
events = TICK_5,PROCESS_STATE
buffer_size = 50
stdout_logfile = NONE
""" % os.path.join(BIN_DIR, 'fcgi-guard')


def test_guard_request_timeout_still_works_on_a_dynamic_pool(pm_pool):
    sup, _ = pm_pool({'pm': 'dynamic', 'pm.start_servers': '2',
                      'pm.min_spare_servers': '1', 'pm.max_spare_servers': '3'},
                     extra_sections=GUARD)
    sup.wait_for(lambda: len(live(sup)) == 2 and
                 states(sup, 'guard') == {'guard': 'RUNNING'}, 15, 'pool and guard')
    url = sup.pool('app').socket_url
    with pytest.raises(Exception):   # the guard ends it: no answer
        fcgi_request(url, uri='/?sleep=20', timeout=20)
    status = sup.wait_for(
        lambda: (lambda s: s['terminated_requests'] == 1 and s)(
            sup.rpc.fcgi.getPoolStatus('app')), 20, 'the request terminated')
    # the guard started its worker again; the manager stopped none meanwhile
    sup.wait_for(lambda: len(sup.pids('app')) >= 2, 20, 'the worker back')
    assert fcgi_request(url, timeout=20).status == 200
    assert status['pm'] == 'dynamic' and status['ceiling'] == 4
    assert sup.rpc.fcgi.getPoolStatus('app')['stops'] == 0


def test_fcgi_scale_refuses_bad_sizes(pm_pool):
    sup, _ = pm_pool({}, numprocs=3)
    out = sup.ctl('fcgi_scale', 'app', '4')
    assert out.returncode == 1
    assert 'SIZE_OUT_OF_RANGE: app: n must be a whole number from 0 to 3' in out.stdout
    out = sup.ctl('fcgi_scale', 'nope', '1')
    assert out.stdout.strip() == 'nope: ERROR (no such pool)'
    out = sup.ctl('fcgi_scale', 'app', 'x')
    assert out.returncode == 2
    assert out.stdout.startswith('Error: n must be a whole number')


def test_failing_worker_makes_the_manager_back_off_with_one_line(pm_pool, tmp_path):
    broken = tmp_path / 'broken.sh'
    broken.write_text('#!/bin/sh\nexit 3\n')
    broken.chmod(0o755)
    sup, nginx = pm_pool({'pm': 'ondemand'}, numprocs=2, command=str(broken),
                         startsecs=1, hold_timeout='2')
    code, _, _ = get(nginx.url + '/', timeout=30)
    assert code == 502    # refused once the hold let go
    time.sleep(3.0)
    assert live(sup) == []
    with open(sup.log_path) as f:
        log = f.read()
    assert log.count('the process manager starts no worker for') == 1, log


def test_hold_timeout_refuses_fast_when_no_worker_comes(pm_pool, tmp_path):
    broken = tmp_path / 'broken.sh'
    broken.write_text('#!/bin/sh\nexit 3\n')
    broken.chmod(0o755)
    sup, nginx = pm_pool({}, numprocs=1, command=str(broken), startsecs=1,
                       hold_timeout='2')
    sup.wait_for(lambda: 'FATAL' in states(sup).values(), 30, 'the worker FATAL')
    sup.wait_for(lambda: not sup.rpc.fcgi.getPoolStatus('app')['socket_open'], 10,
                 'the hold let go')
    code, _, seconds = get(nginx.url + '/', timeout=20)
    assert code == 502 and seconds < 1.0
    with open(sup.log_path) as f:
        assert f.read().count('(hold_timeout): its socket is no longer held') == 1


def test_reload_keeps_the_managers_settings_and_size(pm_pool):
    sup, nginx = pm_pool({'pm': 'dynamic', 'pm.start_servers': '2',
                          'pm.min_spare_servers': '1', 'pm.max_spare_servers': '3'},
                         numprocs=6)
    sup.wait_for(lambda: len(live(sup)) == 2, 15, 'start_servers workers')
    assert sup.ctl('fcgi_scale', 'app', '5').returncode == 0
    sup.ctl('reload', check=True)

    def reloaded():
        try:
            status = sup.rpc.fcgi.getPoolStatus('app')
        except (OSError, xmlrpc.client.Error):
            return False
        return status['spawns'] == 0 and len(live(sup)) == 2 and status
    status = sup.wait_for(reloaded, 30, 'the pool back after the reload')
    time.sleep(1.5)   # supervisor's autostart would have started all six by now
    assert len(live(sup)) == 2, states(sup)
    assert (status['pm'], status['floor'], status['ceiling']) == ('dynamic', 1, 5)
    assert get(nginx.url + '/')[0] == 200


def test_update_keeps_the_managers_settings(pm_pool):
    sup, nginx = pm_pool({'pm': 'dynamic', 'pm.start_servers': '2',
                          'pm.min_spare_servers': '1', 'pm.max_spare_servers': '3'},
                         numprocs=6)
    sup.wait_for(lambda: len(live(sup)) == 2, 15, 'start_servers workers')
    sup.pool('app').extra['environment'] = 'RELEASE="2"'   # a changed pool
    sup.write_config()
    sup.ctl('reread', check=True)
    sup.ctl('update', check=True, timeout=60)
    sup.wait_for(lambda: len(live(sup)) == 2, 15, 'start_servers of the new group')
    time.sleep(1.5)
    assert len(live(sup)) == 2, states(sup)
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['pm'], status['floor'], status['ceiling']) == ('dynamic', 1, 6)
    assert get(nginx.url + '/')[0] == 200


WEB = """
[program:web]
command = sleep 1000
"""


@pytest.mark.parametrize('options, line', [
    ({'web.pm': 'ondemand'}, 'web.pm: web is not an [fcgi-program:x] group'),
    ({'nope.pm': 'ondemand'}, "nope.pm: there is no group 'nope'"),
    ({'app.pm': 'dynamic', 'app.pm.min_spare_servers': '3',
      'app.pm.max_spare_servers': '2'},
     'app.pm.min_spare_servers (3) must be at least 1 and at most '
     'pm.max_spare_servers (2)'),
    ({'app.pm': 'dynamic', 'app.pm.min_spare_servers': '1',
      'app.pm.max_spare_servers': '5', 'app.pm.start_servers': '5'},
     "app.pm.start_servers (5) is more than the pool's numprocs (4)"),
    ({'hold_timeout': 'soon'}, "hold_timeout = 'soon' is refused"),
])
def test_supervisord_refuses_bad_pm_settings_with_one_line(options, line, tmp_path):
    sup = Supervisor([PoolSpec('app', 'fcgi-worker', numprocs=4)], workdir=str(tmp_path),
                     plugin_options=options, extra_sections=WEB)
    try:
        with pytest.raises(HarnessError):
            sup.start()
        with open(sup.stdio_path) as f:
            output = f.read()
    finally:
        sup.stop()
    assert 'Error: Could not make fcgi rpc interface' in output
    reasons = [l for l in output.splitlines()
               if l.startswith('ValueError: [rpcinterface:fcgi]')]
    assert len(reasons) == 1 and line in reasons[0], output


def test_fcgi_restart_of_a_sized_pool_replaces_only_its_running_workers(pm_pool):
    sup, nginx = pm_pool({'pm': 'dynamic', 'pm.start_servers': '2',
                          'pm.min_spare_servers': '1', 'pm.max_spare_servers': '3'},
                         numprocs=6)
    wait_for_start_servers(sup, 2)
    before = dict(sup.pids('app'))
    result = sup.ctl('fcgi_restart', 'app', check=True)
    assert 'done: 2 workers replaced' in result.stdout, result.stdout
    after = sup.pids('app')
    assert sorted(after) == sorted(before) and not set(after.values()) & set(before.values())
    assert len(live(sup)) == 2, states(sup)
    assert get(nginx.url + '/')[0] == 200
