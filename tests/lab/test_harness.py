"""The harness with real supervisord, real flup workers and real nginx.

The plugin sections are left out (rpcinterface=False, ctlplugin=False): these
tests are about the harness, not the plugin.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import sys
import threading
import urllib.request

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import (
    HarnessError, Nginx, PoolSpec, Supervisor, find_nginx, session_processes,
    wait_for,
)
from supervisor_fcgi_ext.lab.processes import alive, wait_gone

NO_PLUGIN = dict(rpcinterface=False, ctlplugin=False)


def assert_all_gone(sid, pids, workdir):
    assert session_processes(sid) == []
    assert [p for p in pids if alive(p)] == []
    assert not os.path.exists(workdir)


def test_write_config_has_plugin_sections_and_pool_options(tmp_path):
    sup = Supervisor([PoolSpec('web', numprocs=2, socket='unix', backlog=7,
                               extra={'startsecs': 0})],
                     workdir=str(tmp_path), plugin_options={'interval': '2'},
                     unix_http_server=True, extra_sections='[group:g]\nprograms=web\n')
    text = sup.write_config()
    assert '[rpcinterface:fcgi]\nsupervisor.rpcinterface_factory = ' \
           'supervisor_fcgi_ext.rpcinterface:make_fcgi_rpcinterface\ninterval = 2\n' in text
    assert 'supervisor_fcgi_ext.controllerplugin:make_fcgi_controllerplugin' in text
    assert '[unix_http_server]\nfile = %s/supervisor.sock' % tmp_path in text
    assert 'serverurl = %s\n' % sup.url in text
    spec = sup.pool('web')
    assert spec.socket_url == 'unix://%s/web.sock' % tmp_path
    assert 'socket = %s\n' % spec.socket_url in text
    assert 'socket_mode = 0666\nsocket_backlog = 7\n' in text
    assert 'command = %s/fcgi-worker\n' % os.path.dirname(sys.executable) in text
    assert 'startsecs = 0\n' in text and 'startsecs = 1' not in text
    assert text.endswith('[group:g]\nprograms=web\n')
    assert sup.write_config() == text   # ports and sockets resolved once
    with open(sup.conf_path) as f:
        assert f.read() == text


def test_write_config_without_plugin(tmp_path):
    text = Supervisor([PoolSpec(socket='tcp')], workdir=str(tmp_path),
                      **NO_PLUGIN).write_config()
    assert 'rpcinterface:fcgi' not in text and 'ctlplugin' not in text
    assert 'socket = tcp://127.0.0.1:' in text and 'socket_mode' not in text


@pytest.mark.parametrize('kind, keepalive', [('tcp', False), ('unix', True)])
def test_pool_behind_nginx_serves_and_stops_clean(flupapp_command, requires_nginx,
                                                  kind, keepalive):
    sup = Supervisor([PoolSpec(command=flupapp_command, numprocs=3, socket=kind)],
                     unix_http_server=True, **NO_PLUGIN)
    nginx = Nginx(sup.pools[0].resolve_socket(sup.workdir), keepalive=keepalive,
                  nginx=requires_nginx)
    with sup:
        pids = sup.pids('app')
        assert sorted(pids) == ['app_00', 'app_01', 'app_02']
        with nginx:
            served = set()
            for _ in range(12):
                with urllib.request.urlopen(nginx.url + '/hello?x=1', timeout=10) as r:
                    assert r.status == 200
                    data = json.loads(r.read())
                assert (data['path'], data['query']) == ('/hello', 'x=1')
                served.add(data['pid'])
            assert served <= set(pids.values())
            nginx_sid, nginx_pids = nginx.pid, session_processes(nginx.pid)
            assert len(nginx_pids) == 2   # master + one worker
        assert_all_gone(nginx_sid, nginx_pids, nginx.workdir)
        direct = fcgi_request(sup.pools[0].socket_url, '/', timeout=10)
        assert json.loads(direct.body)['pid'] in pids.values()
        status = sup.ctl('status', check=True).stdout
        assert status.count('RUNNING') == 3, status
        sid = sup.pid
    assert_all_gone(sid, list(pids.values()), sup.workdir)


@pytest.mark.parametrize('taken', ['pool', 'http'])
def test_port_in_use_is_a_one_line_reason_and_leaves_nothing(flupapp_command, taken):
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        socket_url = 'tcp://127.0.0.1:%d' % port if taken == 'pool' else 'tcp'
        sup = Supervisor([PoolSpec(command=flupapp_command, numprocs=1,
                                   socket=socket_url)], **NO_PLUGIN)
        if taken == 'http':
            sup.port = port
        with pytest.raises(HarnessError) as info:
            sup.start(timeout=10)
    first, _, logs = str(info.value).partition('\n')
    if taken == 'pool':
        assert first == ('supervisord exited with status 1 while waiting for '
                         'XML-RPC at %s: ValueError: Could not create FastCGI '
                         'socket %s: [Errno 98] Address already in use'
                         % (sup.url, socket_url))
    else:
        assert first.startswith('supervisord exited with status 2 while waiting '
                                'for XML-RPC at http://127.0.0.1:%d: Error: '
                                'Another program is already listening' % port)
    assert 'supervisord.log' in logs   # the log tail follows the reason
    assert sup.proc is None and not os.path.exists(sup.workdir)


def test_start_is_not_fooled_by_another_supervisord_on_its_port(supervisor_factory):
    first = supervisor_factory([PoolSpec(command='sleep 100', numprocs=1)],
                               **NO_PLUGIN)
    second = Supervisor([PoolSpec(command='sleep 100', numprocs=1)], **NO_PLUGIN)
    second.port = first.port   # as if free_port() had handed it out twice
    with pytest.raises(HarnessError, match='Another program is already listening'):
        second.start(timeout=10)
    assert first.rpc.supervisor.getPID() == first.pid


def test_nginx_port_in_use_is_the_reason_not_a_false_start(requires_nginx):
    # A connect() to the port would succeed: the test's socket answers it.
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        nginx = Nginx('tcp://127.0.0.1:9', port=port, nginx=requires_nginx)
        with pytest.raises(HarnessError) as info:
            nginx.start()
    assert str(info.value).splitlines()[0] == (
        'nginx exited with status 1 while waiting for its port: nginx: [emerg] '
        'bind() to 127.0.0.1:%d failed (98: Address already in use)' % port)
    assert nginx.proc is None and not os.path.exists(nginx.workdir)


def test_fatal_worker_fails_start_with_its_stderr():
    command = '%s -c "import sys; sys.exit(\'boom: no app\')"' % sys.executable
    sup = Supervisor([PoolSpec(command=command, numprocs=1,
                               extra={'startretries': 0})], **NO_PLUGIN)
    with pytest.raises(HarnessError) as info:
        sup.start(timeout=15)
    first = str(info.value).splitlines()[0]
    assert first == 'app:app_00 is FATAL: Exited too quickly (process log may have details)'
    assert 'boom: no app' in str(info.value)
    assert not os.path.exists(sup.workdir)


def test_stop_kills_workers_orphaned_by_a_dead_supervisord(supervisor_factory,
                                                           flupapp_command):
    sup = supervisor_factory([PoolSpec(command=flupapp_command, numprocs=2)],
                             **NO_PLUGIN)
    sid, pids = sup.pid, list(sup.pids('app').values())
    os.kill(sid, signal.SIGKILL)
    sup.proc.wait(5)
    assert all(alive(p) for p in pids)   # orphans, still serving
    sup.stop()
    assert_all_gone(sid, pids, sup.workdir)


def test_supervisor_factory_teardown_runs_ctl(supervisor_factory, flupapp_command):
    sup = supervisor_factory([PoolSpec(command=flupapp_command, numprocs=1)],
                             **NO_PLUGIN)
    result = sup.ctl('stop', 'app:app_00')
    assert result.returncode == 0 and 'app:app_00: stopped' in result.stdout
    assert sup.pids('app') == {}
    with pytest.raises(HarnessError, match='^supervisorctl nosuchcommand exited'):
        sup.ctl('nosuchcommand', check=True)


def test_nginx_conf_is_self_contained(requires_nginx):
    plain = Nginx('tcp://127.0.0.1:9000', port=8080, nginx=requires_nginx)
    text = plain.conf_text
    assert 'server 127.0.0.1:9000;' in text and 'listen 127.0.0.1:8080;' in text
    assert 'include' not in text and 'keepalive' not in text
    assert 'fastcgi_param PATH_INFO $uri;' in text
    assert 'fastcgi_temp_path %s/fastcgi_temp;' % plain.workdir in text
    assert 'user' not in text   # the temp workdir is reachable by nobody
    plain.stop()   # never started: removes the workdir
    assert not os.path.exists(plain.workdir)
    kept = Nginx('unix:///run/x.sock', keepalive=True, nginx=requires_nginx)
    text = kept.conf_text
    kept.stop()
    assert 'server unix:/run/x.sock;' in text
    assert 'keepalive 16;' in text and 'fastcgi_keep_conn on;' in text
    counted = Nginx('tcp://127.0.0.1:9000', keepalive=3, nginx=requires_nginx)
    text = counted.conf_text
    counted.stop()
    assert 'keepalive 3;' in text and 'fastcgi_keep_conn on;' in text


def test_nginx_proxies_http_to_an_http_upstream(nginx_factory):
    """http=True: proxy_pass instead of fastcgi_pass (bench_worker's gunicorn)."""
    class Hello(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def do_GET(self):
            body = ('proxied %s' % self.path).encode()
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hello)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        nginx = nginx_factory('tcp://127.0.0.1:%d' % upstream.server_address[1],
                              http=True, keepalive=True)
        assert 'fastcgi' not in nginx.conf_text.split('location')[1]
        for _ in range(3):     # over one kept-alive upstream connection
            with urllib.request.urlopen(nginx.url + '/x?y=1', timeout=10) as resp:
                assert resp.read() == b'proxied /x?y=1'
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_config_text_writes_nothing_and_is_what_write_config_writes(tmp_path):
    sup = Supervisor([PoolSpec()], workdir=str(tmp_path))
    text = sup.config_text()
    assert not os.path.exists(sup.conf_path)
    assert sup.write_config() == text == open(sup.conf_path).read()


@pytest.mark.skipif(os.geteuid() != 0, reason='nginx only switches user as root')
def test_nginx_workers_run_as_root_only_when_nobody_cannot_reach(tmp_path,
                                                                 requires_nginx):
    private = tmp_path / 'private'
    private.mkdir(mode=0o700)
    text = Nginx('unix://%s/app.sock' % private, workdir=str(tmp_path / 'ngx'),
                 nginx=requires_nginx).conf_text
    assert text.splitlines()[1].startswith('user root;')
    assert text.splitlines()[1].endswith(' or %s' % private)
    # tmp_path's parents are 0700, so a workdir there needs root on its own
    text = Nginx('tcp://127.0.0.1:9000', workdir=str(tmp_path / 'ngx'),
                 nginx=requires_nginx).conf_text
    assert text.splitlines()[1].startswith('user root;')


def test_missing_nginx_skips_locally_and_fails_in_ci(pytester, monkeypatch):
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'conftest.py')) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile('def test_needs_nginx(nginx_factory): pass')
    monkeypatch.setenv('NGINX', '/nonexistent/nginx')
    monkeypatch.delenv('CI', raising=False)
    local = pytester.runpytest_subprocess('-rs', '-p', 'no:cacheprovider')
    local.assert_outcomes(skipped=1)
    local.stdout.fnmatch_lines(['*nginx not found*apt-get install nginx-light'])
    monkeypatch.setenv('CI', 'true')
    ci = pytester.runpytest_subprocess('-p', 'no:cacheprovider')
    ci.assert_outcomes(errors=1)
    ci.stdout.fnmatch_lines(['*Failed: nginx not found*apt-get install nginx-light'])


def test_find_nginx_missing_says_how_to_install():
    with pytest.raises(HarnessError, match='apt-get install nginx-light$'):
        find_nginx('/nonexistent/nginx')


def test_wait_for_returns_the_value_or_names_what_timed_out():
    assert wait_for(lambda: 42, 1, 'x') == 42
    with pytest.raises(HarnessError, match=r'^timed out after 0.1s waiting for godot$'):
        wait_for(lambda: False, 0.1, 'godot')


# -- daemon mode: supervisord forks and detaches, as with nodaemon = false ------

def started_pid(log_path):
    """The pid supervisord logged on start (its pid file is gone once it stops)."""
    with open(log_path) as f:
        return [int(line.rsplit(' ', 1)[1]) for line in f
                if 'supervisord started with pid' in line][-1]


def test_daemon_detaches_and_stop_ends_it_and_its_workers(flupapp_command):
    sup = Supervisor([PoolSpec(command=flupapp_command, numprocs=2)], daemon=True,
                     **NO_PLUGIN)
    with sup:
        assert 'nodaemon = false\n' in open(sup.conf_path).read()
        assert '-n' not in sup.proc.args
        assert sup.proc.poll() == 0          # the process we started forked and exited
        pid = sup.pid
        assert pid != sup.proc.pid and os.getsid(pid) == pid
        assert int(open(sup.pidfile_path).read()) == pid
        assert sup.rpc.supervisor.getPID() == pid
        workers = list(sup.pids('app').values())
        assert sorted(session_processes(pid)) == sorted([pid] + workers)
        assert sup.ctl('status', check=True).stdout.count('RUNNING') == 2
    assert_all_gone(pid, [pid] + workers, sup.workdir)


def test_daemon_is_found_by_its_pid_file_from_another_harness(tmp_path,
                                                              flupapp_command):
    pools = [PoolSpec(command=flupapp_command, numprocs=1)]
    first = Supervisor(pools, workdir=str(tmp_path / 'w'), daemon=True,
                       keep=True, **NO_PLUGIN)
    first.start()
    pid, workers = first.pid, list(first.pids('app').values())
    # e.g. a test that lost its Supervisor object: the workdir is enough.
    again = Supervisor(pools, workdir=str(tmp_path / 'w'), daemon=True, **NO_PLUGIN)
    assert again.pid == pid
    again.stop()
    assert [p for p in [pid] + workers if alive(p)] == []
    assert first.read_pidfile() is None
    first.stop()   # nothing left to stop: no error


def test_daemon_stale_pid_file_names_nobody(tmp_path):
    sup = Supervisor([PoolSpec()], workdir=str(tmp_path), daemon=True)
    with open(sup.pidfile_path, 'w') as f:
        f.write('%d\n' % os.getpid())   # alive, but not a supervisord with our conf
    assert sup.pid is None
    sup.stop()
    assert alive(os.getpid())


def test_daemon_failed_start_stops_the_daemon(tmp_path):
    command = '%s -c "import sys; sys.exit(\'boom: no app\')"' % sys.executable
    sup = Supervisor([PoolSpec(command=command, numprocs=1,
                               extra={'startretries': 0})],
                     workdir=str(tmp_path), daemon=True, **NO_PLUGIN)
    with pytest.raises(HarnessError) as info:
        sup.start(timeout=15)
    assert str(info.value).splitlines()[0] == (
        'app:app_00 is FATAL: Exited too quickly (process log may have details)')
    pid = started_pid(sup.log_path)
    assert wait_gone([pid], 1) == [] and session_processes(pid) == []
    assert sup.proc is None


def test_daemon_port_in_use_fails_before_it_forks():
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        sup = Supervisor([PoolSpec(command='sleep 100', numprocs=1)], daemon=True,
                         **NO_PLUGIN)
        sup.port = busy.getsockname()[1]
        with pytest.raises(HarnessError, match='^supervisord exited with status 2 '
                           'while waiting for XML-RPC.*Another program is '
                           'already listening'):
            sup.start(timeout=10)
    assert sup.proc is None and not os.path.exists(sup.workdir)


def test_daemon_killed_leaves_orphans_that_stop_kills(supervisor_factory,
                                                      flupapp_command):
    sup = supervisor_factory([PoolSpec(command=flupapp_command, numprocs=2)],
                             daemon=True, **NO_PLUGIN)
    sid, pids = sup.pid, list(sup.pids('app').values())
    os.kill(sid, signal.SIGKILL)
    assert wait_gone([sid], 5) == []
    assert all(alive(p) for p in pids)
    sup.stop()
    assert_all_gone(sid, pids, sup.workdir)


def test_daemon_of_a_failed_test_is_stopped_by_the_fixture(pytester, tmp_path):
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'conftest.py')) as f:
        pytester.makeconftest(f.read())
    pidfile = tmp_path / 'pids'
    pytester.makepyfile('''
from supervisor_fcgi_ext.lab.harness import PoolSpec

def test_fails(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command='sleep 100', numprocs=1)],
                             daemon=True, rpcinterface=False, ctlplugin=False)
    pids = [sup.pid] + list(sup.pids('app').values())
    open(%r, 'w').write(' '.join(map(str, pids)))
    assert False, 'the test failed'
''' % str(pidfile))
    result = pytester.runpytest_subprocess('-p', 'no:cacheprovider')
    result.assert_outcomes(failed=1)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2 and [p for p in pids if alive(p)] == []
