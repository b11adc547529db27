"""fcgi-guard where issue 11 found it weak, each with real supervisord, real
fcgi-worker pools, real nginx and real signals: an XML-RPC server that never
answers, one pool whose status fails, a worker frozen mid-request."""
import os
import signal
import socket
import time

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec

from guardsup import busy_worker, guarded, read, request_in_thread
from test_guard_process import SilentServer


def test_supervisord_keeps_sending_events_when_rpc_never_answers(supervisor_factory,
                                                                  tmp_path):
    """The guard's serverurl is a server that accepts and never answers:
    each TICK costs one --rpc-timeout, is acknowledged, and the next comes."""
    path = str(tmp_path / 'silent.sock')
    server = SilentServer(socket.AF_UNIX, path)
    try:
        sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=1)],
                           '--request-timeout 5 --rpc-timeout 1',
                           listener_options='serverurl = unix://%s\n' % path)
        # supervisord sends no TICK to a listener that has not answered the last
        sup.wait_for(lambda: read(log).count('TICK_5 failed: TimeoutError') >= 2,
                     3 * 5 + 3, 'two timed out checks')
        assert sup.rpc.supervisor.getProcessInfo('guard')['statename'] == 'RUNNING'
        assert 'TICK_5 failed: TimeoutError: timed out' in read(log)
    finally:
        server.close()


def http_get_raw(port, target, timeout=10):
    """One HTTP/1.0 request whose request line holds ``target`` bytes as is."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as sock:
        sock.sendall(b'GET ' + target + b' HTTP/1.0\r\nHost: localhost\r\n\r\n')
        return sock.recv(65536)


def test_a_hostile_uri_on_one_pool_does_not_stop_the_timeout_on_another(
        supervisor_factory, nginx_factory, tmp_path):
    """Issue 11 item 1: U+FFFE in pool a's last URI once failed every status
    call, and a 20 s request under --request-timeout 4 ran its full 20 s on
    pool b too."""
    sup, log = guarded(supervisor_factory, tmp_path,
                       [PoolSpec(name='a', numprocs=1), PoolSpec(name='b', numprocs=2)],
                       '--request-timeout 4 --grace 1')
    nginx = nginx_factory(sup.pool('a').socket_url)
    # U+FFFE as the bytes a browser sends for curl's ?%EF%BF%BE
    assert http_get_raw(nginx.port, b'/app?\xef\xbf\xbe').startswith(b'HTTP/1.1 200')
    thread, outcome = request_in_thread(sup.pool('b').socket_url, '/?sleep=20')
    start = time.monotonic()
    busy = busy_worker(sup, 'b')
    thread.join(4 + 5 + 1 + 4)
    assert not thread.is_alive(), 'the 20 s request on pool b ran on:\n' + read(log)
    print('pool b request cut after %.1f s' % (outcome[1] - start))
    assert isinstance(outcome[0], Exception)
    assert ('pool b: terminating %s pid %d: GET /?sleep=20 running'
            % (busy['name'], busy['pid'])) in read(log)
    assert 'failed:' not in read(log)          # no check was lost as a whole


def test_a_worker_frozen_mid_request_is_killed_and_replaced(supervisor_factory,
                                                            tmp_path):
    """Issue 11 item 9: SIGSTOP during a request.  Its stopsignal waits for a
    SIGCONT that never comes: after --grace the guard KILLs it."""
    # supervisor's own KILL after stopwaitsecs must not come first
    sup, log = guarded(supervisor_factory, tmp_path,
                       [PoolSpec(numprocs=2, extra={'stopwaitsecs': 10})],
                       '--pool app --request-timeout 2 --grace 1')
    url = sup.pool('app').socket_url
    thread, outcome = request_in_thread(url, '/?sleep=60')
    busy = busy_worker(sup, 'app')
    os.kill(busy['pid'], signal.SIGSTOP)
    start = time.monotonic()
    try:
        # timeout + one check interval + grace, plus supervisor's event latency
        sup.wait_for(lambda: sup.pids('app').get(busy['name'], busy['pid']) != busy['pid'],
                     2 + 5 + 1 + 4, 'the frozen worker to be replaced')
    finally:
        try:
            os.kill(busy['pid'], signal.SIGCONT)
        except ProcessLookupError:
            pass
    print('frozen worker replaced after %.1f s' % (time.monotonic() - start))
    thread.join(5)
    assert not thread.is_alive() and isinstance(outcome[0], Exception)
    text = read(log)
    assert ('pool app: terminating %s pid %d: GET /?sleep=60 running'
            % (busy['name'], busy['pid'])) in text
    assert 'app:%s still running after --grace 1 s: KILL' % busy['name'] in text
    assert fcgi_request(url, timeout=5).status == 200
