"""Zero-downtime pool operations on real supervisord, nginx and reference
workers: requests through nginx are counted while pools restart.

Each "loses nothing" test has a twin that shows the loss without the
feature, so none of them can pass by measuring nothing.
"""
import os
import threading
import time
import urllib.request
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec
from supervisor_fcgi_ext.lab.processes import cmdline
from supervisor_fcgi_ext.lab.loadstream import RequestStream

RATE = 200


@pytest.fixture
def pool(supervisor_factory, nginx_factory):
    """make(numprocs, hold, socket, command) -> (Supervisor, Nginx) for pool app."""
    def make(numprocs=3, hold=True, socket='tcp', command='fcgi-worker'):
        spec = PoolSpec('app', command, numprocs=numprocs, socket=socket,
                        extra={'stopwaitsecs': 10})
        sup = supervisor_factory([spec], plugin_options={
            'hold_sockets': 'true' if hold else 'false'})
        return sup, nginx_factory(spec.socket_url)
    return make


def under_load(nginx, action, settle=0.5):
    """Run action() inside a steady request stream; (StreamResult, action's value)."""
    stream = RequestStream(nginx.port, rate=RATE, clients=6)
    with stream:
        assert stream.wait_requests(50, 10), 'no requests got through'
        value = action()
        time.sleep(settle)
    return stream.result, value


class SlowRequest(threading.Thread):
    """GET /?sleep=S through nginx in the background; .body when done."""

    def __init__(self, nginx, seconds):
        super().__init__(daemon=True)
        self.url = '%s/?sleep=%g' % (nginx.url, seconds)
        self.body = None

    def run(self):
        with urllib.request.urlopen(self.url, timeout=30) as response:
            self.body = response.read().decode()


def restart_ok(sup, *args):
    result = sup.ctl('fcgi_restart', 'app', *args, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_rolling_restart_under_load_refuses_nothing(pool):
    sup, nginx = pool(numprocs=3, hold=False)   # the restart keeps the socket itself
    before = sup.pids('app')
    result, out = under_load(nginx, lambda: restart_ok(sup))
    assert (result.failed, result.statuses) == (0, {})
    assert result.requests > RATE
    after = sup.pids('app')
    assert set(after) == set(before)
    assert not set(after.values()) & set(before.values())
    lines = out.splitlines()
    assert lines[0] == ('app: rolling restart of 3 workers, 1 at a time, '
                        'current config')
    assert 'app: batch 3/3: stopping app_02 (pid %d)' % before['app_02'] in lines
    assert sum('accepting again' in line for line in lines) == 3
    assert 'never fewer than 2 accepting' in lines[-1]


def test_restart_without_the_plugin_loses_requests(pool):
    sup, nginx = pool(numprocs=3, hold=False)
    result, _ = under_load(nginx, lambda: sup.ctl('restart', 'app:*', check=True))
    assert result.failed > 0
    assert set(result.statuses) == {'HTTP 502'}


def test_single_worker_restart_finishes_its_request_and_refuses_nothing(pool):
    sup, nginx = pool(numprocs=1, hold=False, socket='unix')
    old_pid = sup.pids('app')['app_00']
    slow = SlowRequest(nginx, 1.5)

    def restart():
        slow.start()
        time.sleep(0.3)            # the only worker is inside the request now
        return restart_ok(sup)
    result, _ = under_load(nginx, restart)
    slow.join(10)
    assert slow.body == 'ProcessId: %d\n' % old_pid   # graceful: answered
    assert (result.failed, result.statuses) == (0, {})
    # the stream waited for the request in flight plus the new worker's start
    assert 1.0 < result.max_latency < 5.0
    assert sup.pids('app')['app_00'] != old_pid


@pytest.mark.parametrize('hold', [True, False])
def test_stop_pause_start(pool, hold):
    sup, nginx = pool(numprocs=2, hold=hold)
    seen = {}

    def stop_pause_start():
        sup.ctl('stop', 'app:*', check=True)
        time.sleep(0.5)
        seen['status'] = sup.rpc.fcgi.getPoolStatus('app')
        seen['text'] = sup.ctl('fcgi_status', 'app').stdout
        time.sleep(0.5)
        sup.ctl('start', 'app:*', check=True)
    result, _ = under_load(nginx, stop_pause_start)
    status = seen['status']
    if hold:
        assert (result.failed, result.statuses) == (0, {})
        assert status['socket_held'] and status['total_processes'] == 0
        assert status['listen_queue'] > 0          # the stream's clients wait
        assert '(socket open, held)' in seen['text']
        assert result.max_latency > 0.9
    else:
        assert result.failed > 0
        assert not status['socket_open']


def test_deploy_rolls_a_changed_command_and_update_has_nothing_left(pool):
    sup, nginx = pool(numprocs=2)
    sup.pool('app').command = 'fcgi-worker --threads 2'
    sup.write_config()
    assert 'app: changed' in sup.ctl('reread', check=True).stdout
    result, out = under_load(nginx, lambda: restart_ok(sup, '--batch', '1'))
    assert (result.failed, result.statuses) == (0, {})
    assert 'reread config (changed: command)' in out.splitlines()[0]
    pids = sup.pids('app')
    for pid in pids.values():
        assert cmdline(pid)[-2:] == ['--threads', '2']
    update = sup.ctl('update', check=True)
    assert 'app' not in update.stdout
    time.sleep(0.5)
    assert sup.pids('app') == pids


def test_failed_replacement_stops_the_rollout_and_old_workers_serve(pool):
    sup, nginx = pool(numprocs=3)
    before = sup.pids('app')
    sup.pool('app').command = 'fcgi-worker no_such_module_xyz:app'
    sup.write_config()
    sup.ctl('reread', check=True)
    result, out = under_load(nginx, lambda: sup.ctl('fcgi_restart', 'app',
                                                    timeout=60))
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1].startswith(
        'app: ERROR (app:app_00 failed to start (BACKOFF: Exited too quickly')
    after = sup.pids('app')
    assert after == {'app_01': before['app_01'], 'app_02': before['app_02']}
    assert (result.failed, result.statuses) == (0, {})
    status = sup.rpc.fcgi.getRestartStatus('app')
    assert (status['state'], status['replaced']) == ('failed', 0)


def test_api_deferred_call_and_faults(supervisor_factory):
    sup = supervisor_factory([PoolSpec('app', 'fcgi-worker', numprocs=2)],
                             extra_sections='[program:plain]\ncommand=sleep 1000\n')
    rpc = sup.rpc
    started = rpc.fcgi.rollingRestart('app', 1, False)
    assert (started['state'], started['total']) == ('running', 2)
    for args, code in ((('app',), 201), (('nope',), 10), (('plain',), 200),
                       (('app', 0), 2)):
        with pytest.raises(xmlrpc.client.Fault) as info:
            rpc.fcgi.rollingRestart(*args)
        assert info.value.faultCode == code, args
    sup.wait_for(lambda: rpc.fcgi.getRestartStatus('app')['state'] == 'done',
                 20, 'the first restart to end')
    done = rpc.fcgi.rollingRestart('app', 2)       # deferred: answers at the end
    assert (done['state'], done['replaced'], done['batch']) == ('done', 2, 2)
    assert sup.ctl('fcgi_restart', 'nope').stdout == 'nope: ERROR (no such pool)\n'


def test_reload_rebinds_held_sockets_and_update_removes_a_unix_socket_file(
        supervisor_factory, tmp_path):
    app = PoolSpec('app', 'fcgi-worker', numprocs=1)
    gone = PoolSpec('gone', 'fcgi-worker', numprocs=1, socket='unix')
    sup = supervisor_factory([app, gone])
    path = gone.socket_url[len('unix://'):]
    old = sup.pids('app')
    # A reload makes new groups that bind the same addresses: the held
    # sockets must close with the old workers, not be left to reload's
    # close-every-fd (a Python socket object would then own a number that a
    # new socket reuses).
    sup.ctl('reload', check=True)

    def back():
        try:
            pids = sup.pids('app'), sup.pids('gone')
        except (OSError, xmlrpc.client.Error):
            return False       # between the old and the new HTTP server
        return pids[0] != old and len(pids[0]) == len(pids[1]) == 1
    sup.wait_for(back, 20, 'supervisord back after reload')
    assert fcgi_request(app.socket_url).body.startswith(b'ProcessId:')
    log = open(sup.log_path).read()
    stopped = log.index('stopped: app_00')
    rebound = log.index('Creating socket', stopped)
    assert 'Closing socket %s' % app.socket_url in log[stopped:rebound]
    sup.pools.remove(gone)
    sup.write_config()
    sup.ctl('reread', check=True)
    assert 'gone: removed process group' in sup.ctl('update', check=True).stdout
    assert not os.path.exists(path)
    assert sup.rpc.fcgi.getPoolStatus('app')['socket_held'] is False
