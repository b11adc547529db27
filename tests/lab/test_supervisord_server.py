"""The supervisord harness (lab/supervisord_server.py) with real
supervisord and real flup workers, in the foreground and as a daemon.

The plugin sections are left out (rpcinterface=False, ctlplugin=False): these
tests are about the harness, not the plugin.
"""
from __future__ import annotations

import os
import signal
import socket
import sys

import pytest

from supervisor_fcgi_ext.lab.harness import (HarnessError, PoolSpec, Supervisor,
                                             session_processes)
from supervisor_fcgi_ext.lab.processes import alive, wait_gone

NO_PLUGIN = dict(rpcinterface=False, ctlplugin=False)


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
                                                           flupapp_command,
                                                           assert_all_gone):
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


def test_config_text_writes_nothing_and_is_what_write_config_writes(tmp_path):
    sup = Supervisor([PoolSpec()], workdir=str(tmp_path))
    text = sup.config_text()
    assert not os.path.exists(sup.conf_path)
    assert sup.write_config() == text == open(sup.conf_path).read()


# -- daemon mode: supervisord forks and detaches, as with nodaemon = false ------

def started_pid(log_path):
    """The pid supervisord logged on start (its pid file is gone once it stops)."""
    with open(log_path) as f:
        return [int(line.rsplit(' ', 1)[1]) for line in f
                if 'supervisord started with pid' in line][-1]


def test_daemon_detaches_and_stop_ends_it_and_its_workers(flupapp_command,
                                                         assert_all_gone):
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
                                                      flupapp_command,
                                                      assert_all_gone):
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
