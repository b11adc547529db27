"""fcgi.getPoolStatus and fcgi_status against real supervisord processes."""
import json
import os
import socket
import sys
import time
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import HarnessError, PoolSpec, Supervisor

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDCONN = '%s %s' % (sys.executable, os.path.join(TESTS_DIR, 'holdconn.py'))
LATEACCEPT = '%s %s' % (sys.executable, os.path.join(TESTS_DIR, 'lateaccept.py'))


def connect(url, count):
    """count non-blocking client connections to a pool socket URL."""
    clients = []
    for _ in range(count):
        if url.startswith('unix://'):
            client = socket.socket(socket.AF_UNIX)
            address = url[len('unix://'):]
        else:
            client = socket.socket(socket.AF_INET)
            host, port = url[len('tcp://'):].rsplit(':', 1)
            address = (host, int(port))
        client.setblocking(False)
        try:
            client.connect(address)
        except (BlockingIOError, InterruptedError):
            pass
        clients.append(client)
    return clients


def close_all(clients):
    for client in clients:
        client.close()


def pool_status(sup, name='app'):
    return sup.rpc.fcgi.getPoolStatus(name)


@pytest.mark.parametrize('kind', ['tcp', 'unix'])
def test_listen_queue_counts_clients_nobody_accepts(supervisor_factory, kind):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=2,
                                       socket=kind, backlog=5)])
    url = sup.pool('app').socket_url
    clients = connect(url, 3)
    try:
        sup.wait_for(lambda: pool_status(sup)['listen_queue'] == 3, 5,
                     'listen_queue == 3')
        status = pool_status(sup)
        assert status['socket'] == url
        assert status['socket_open'] is True
        assert status['listen_queue_len'] == 5
        assert status['total_processes'] == 2
        assert status['connections'] == 0          # nobody accepted
        assert [p['connections'] for p in status['processes']] == [0, 0]
        clients += connect(url, 6)                 # 9 > backlog + 1
        sup.wait_for(lambda: pool_status(sup)['listen_queue'] == 6, 5,
                     'listen_queue full at backlog + 1')
        if kind == 'tcp':
            sup.wait_for(lambda: pool_status(sup)['listen_drops'] > 0, 5,
                         'listen_drops > 0')
        else:
            assert pool_status(sup)['listen_drops'] == -1  # no such counter
    finally:
        close_all(clients)


def test_requests_served_on_a_tcp_pool_are_no_drops(supervisor_factory):
    # The drops figure is the listening socket's own counter (SO_MEMINFO),
    # which counts every segment the listener discards: with
    # TCP_DEFER_ACCEPT on the pool socket (tried for speed) each
    # connection's bare handshake ACK was one, and drops == requests.
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    url = sup.pool('app').socket_url
    assert url.startswith('tcp://')
    for _ in range(10):
        assert fcgi_request(url, uri='/').status == 200
    status = pool_status(sup)
    assert (status['requests'], status['listen_drops']) == (10, 0)


@pytest.mark.parametrize('kind', ['tcp', 'unix'])
def test_connections_show_under_the_pid_that_holds_them(supervisor_factory, kind):
    sup = supervisor_factory([PoolSpec(command=HOLDCONN + ' 2', numprocs=3,
                                       socket=kind)])
    clients = connect(sup.pool('app').socket_url, 7)  # 3 x 2 held, 1 queued
    try:
        sup.wait_for(lambda: pool_status(sup)['connections'] == 6, 5,
                     'six connections held')
        status = pool_status(sup)
        pids = sup.pids('app')
        assert {p['name']: p['pid'] for p in status['processes']} == pids
        assert [p['connections'] for p in status['processes']] == [2, 2, 2]
        assert status['listen_queue'] == 1
        # workers that write no scoreboard are counted by sampling
        assert {p['requests_source'] for p in status['processes']} == {'sampled'}
        sup.wait_for(lambda: pool_status(sup)['requests'] == 6, 5,
                     'six connections sampled')
        assert [p['worker_state'] for p in status['processes']] == ['running'] * 3
    finally:
        close_all(clients)


def burst_seen_only_by_sampling(sup, clients=4):
    """Fill the queue, let 1.5 s pass without a status call, drain it; the
    peak can then only come from the plugin's sampling in supervisord."""
    held = connect(sup.pool('app').socket_url, clients)
    time.sleep(1.5)
    sup.rpc.supervisor.signalProcessGroup('app', 'USR1')   # lateaccept drains
    time.sleep(0.5)
    close_all(held)
    return pool_status(sup)


def test_max_listen_queue_catches_a_one_second_burst(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command=LATEACCEPT, numprocs=1, backlog=20)])
    assert pool_status(sup)['max_listen_queue'] == 0
    status = burst_seen_only_by_sampling(sup)
    assert status['listen_queue'] == 0
    assert status['max_listen_queue'] == 4
    assert sup.rpc.fcgi.resetStatistics('app') is True
    assert pool_status(sup)['max_listen_queue'] == 0


@pytest.mark.parametrize('hold', [True, False])
def test_pool_with_all_workers_stopped_still_answers(supervisor_factory, hold):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=2)],
                             plugin_options={'hold_sockets': str(hold).lower()})
    sup.ctl('stop', 'app:*', check=True)
    status = pool_status(sup)
    assert status['socket_open'] is hold
    assert status['socket_held'] is hold
    assert status['total_processes'] == 0
    assert [p['state'] for p in status['processes']] == ['STOPPED', 'STOPPED']
    assert [p['worker_state'] for p in status['processes']] == ['stopped'] * 2


def test_faults_for_bad_names_and_garbage_arguments(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=1)],
                             extra_sections='[program:plain]\ncommand=sleep 1000\n')
    rpc = sup.rpc
    cases = [(('nope',), 10, 'BAD_NAME'), (('plain',), 200, 'NOT_FCGI_POOL'),
             ((123,), 10, 'BAD_NAME'), ((), 2, 'INCORRECT_PARAMETERS'),
             (('app', 'x'), 2, 'INCORRECT_PARAMETERS')]
    for args, code, name in cases:
        with pytest.raises(xmlrpc.client.Fault) as info:
            rpc.fcgi.getPoolStatus(*args)
        assert info.value.faultCode == code, args
        assert info.value.faultString.startswith(name), args
    assert [p['name'] for p in rpc.fcgi.getAllPoolStatus()] == ['app']


def test_unknown_plugin_key_refuses_to_start_with_one_line_reason():
    sup = Supervisor([PoolSpec(command='sleep 1000', numprocs=1)],
                     plugin_options={'sample_intervall': '1'})
    with pytest.raises(HarnessError) as info:
        sup.start(timeout=10)
    assert "[rpcinterface:fcgi] unknown key 'sample_intervall'" in str(info.value)


def test_update_with_unchanged_config_restarts_nothing(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=2)])
    before = sup.pids('app')
    pool_status(sup)
    result = sup.ctl('update')
    assert result.returncode == 0, result.stdout + result.stderr
    time.sleep(0.5)
    assert sup.pids('app') == before


def test_plugin_loaded_twice_behaves_like_once(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command=HOLDCONN + ' 1', numprocs=2)],
                             unix_http_server=True)
    clients = connect(sup.pool('app').socket_url, 2)
    try:
        sup.wait_for(lambda: pool_status(sup)['requests'] == 2, 5,
                     'two connections sampled once each')
        time.sleep(2.2)   # more loop samples must not count them again
        assert pool_status(sup)['requests'] == 2
        log = open(sup.log_path).read()
        assert log.count("RPC interface 'fcgi' initialized") == 2
    finally:
        close_all(clients)


def test_a_failing_plugin_callback_does_not_hurt_supervisord(supervisor_factory,
                                                            tmp_path):
    # The pool's scoreboard directory cannot be made: a file is in the way.
    # Our STARTING callback fails inside supervisord; it must log and go on.
    board = tmp_path / 'board'
    board.mkdir()
    (board / 'app').write_text('in the way')
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=2)],
                             plugin_options={'scoreboard_dir': str(board)})
    assert len(sup.pids('app')) == 2
    assert pool_status(sup)['total_processes'] == 2
    assert 'fcgi: no scoreboard for app_00' in open(sup.log_path).read()
    assert sup.rpc.supervisor.getState()['statename'] == 'RUNNING'


class TestFcgiStatusCommand:
    @pytest.fixture
    def sup(self, supervisor_factory):
        return supervisor_factory(
            [PoolSpec(command=HOLDCONN + ' 1', numprocs=2),
             PoolSpec(name='other', command='sleep 1000', numprocs=1,
                      socket='unix')])

    def test_table_of_every_pool(self, sup):
        result = sup.ctl('fcgi_status')
        assert result.returncode == 0, result.stderr
        assert 'pool app  tcp://127.0.0.1:' in result.stdout
        assert 'pool other  unix://' in result.stdout
        assert 'app_00' in result.stdout and 'other_00' in result.stdout

    def test_json_of_one_pool(self, sup):
        result = sup.ctl('fcgi_status', '--json', 'other')
        assert result.returncode == 0
        pools = json.loads(result.stdout)
        assert [p['name'] for p in pools] == ['other']
        assert pools[0]['listen_queue_len'] >= 1

    def test_unknown_pool_is_one_line_and_exit_status_4(self, sup):
        result = sup.ctl('fcgi_status', 'nope')
        assert result.stdout.strip() == 'nope: ERROR (no such pool)'
        assert result.returncode == 4

    def test_unknown_option(self, sup):
        result = sup.ctl('fcgi_status', '--jsno')
        assert 'Error: unknown option --jsno' in result.stdout
        assert result.returncode == 2

    def test_help(self, sup):
        result = sup.ctl('help', 'fcgi_status')
        assert 'fcgi_status --json' in result.stdout


def test_fcgi_status_without_the_rpcinterface_says_what_to_add(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=1)],
                             rpcinterface=False)
    result = sup.ctl('fcgi_status')
    assert 'add [rpcinterface:fcgi]' in result.stdout
    assert result.returncode == 5


def test_sampling_goes_on_after_a_reload(supervisor_factory):
    sup = supervisor_factory([PoolSpec(command=LATEACCEPT, numprocs=1, backlog=20)])
    result = sup.ctl('reload')
    assert result.returncode == 0, result.stdout + result.stderr
    def back():
        try:   # supervisord's HTTP server is down for a moment
            return pool_status(sup)['total_processes'] == 1
        except OSError:
            return False
    sup.wait_for(back, 20, 'the pool back after the reload')
    status = burst_seen_only_by_sampling(sup, clients=3)
    assert (status['listen_queue'], status['max_listen_queue']) == (0, 3)
