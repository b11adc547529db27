"""fcgi-guard end to end: real supervisord, reference workers (fcgi-worker),
nginx and sockets; each policy as a user sees it in the logs and the pool."""
import os
import socket
import threading
import time
import urllib.error
import urllib.request

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec

from guardsup import busy_worker, guarded, read, request_in_thread

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stuck_request_is_terminated_after_its_stack_is_slowlogged(
        supervisor_factory, tmp_path):
    slowlog = tmp_path / 'app.slow'
    sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=2)],
                       '--pool app --request-timeout 2 --grace 1 --slowlog-timeout 1 '
                       '--slowlog %s --crash-threshold 1/60' % slowlog)
    url = sup.pool('app').socket_url
    client, outcome = request_in_thread(url, '/?sleep=60', timeout=30)
    start = time.monotonic()
    busy = busy_worker(sup, 'app')
    # timeout + one check interval + grace, plus supervisor's event latency
    client.join(2 + 5 + 1 + 3)
    assert not client.is_alive(), 'the stuck request still runs'
    sup.wait_for(lambda: sup.pids('app').get(busy['name'], busy['pid']) != busy['pid'],
                 5, 'the stuck worker to be replaced and RUNNING')
    print('stuck request cut after %.1f s, worker back after %.1f s'
          % (outcome[1] - start, time.monotonic() - start))
    assert isinstance(outcome[0], Exception)            # the connection was cut
    assert fcgi_request(url, timeout=5).status == 200   # the pool serves on
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert (status['slow_requests'], status['terminated_requests']) == (1, 1)
    # the guard named the worker: a guard kill of that process (fcgi.recordTerminatedRequest)
    assert [(p['name'], p['guard_kills']) for p in status['processes']
            if p['guard_kills']] == [(busy['name'], 1)]
    assert (status['guard_kills'], status['unexpected_exits']) == (1, 0)
    text = read(log)
    assert ('pool app: terminating %s pid %d: GET /?sleep=60 running'
            % (busy['name'], busy['pid'])) in text
    assert 'ALARM' not in text       # a worker the guard stopped is no crash
    entry = read(slowlog)
    assert '[pool app] pid %d (%s)\nrequest = GET /?sleep=60\n' % (
        busy['pid'], busy['name']) in entry
    assert 'in demo_app' in entry


def test_recycling_under_steady_load_fails_no_request(supervisor_factory, nginx_factory,
                                                      tmp_path):
    sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=3)],
                       '--pool app --max-requests 50')
    nginx = nginx_factory(sup.pool('app').socket_url)
    first = set(sup.pids('app').values())
    stop, counts, errors = threading.Event(), [0, 0], []

    def load():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(nginx.url + '/?sleep=0.01', timeout=10) as r:
                    r.read()
                counts[0] += 1
            except (OSError, urllib.error.HTTPError) as exc:
                counts[1] += 1
                errors.append(repr(exc))
    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    lowest = 3
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = set(sup.pids('app').values())
            lowest = min(lowest, len(pids))
            if not pids & first and read(log).count(' back: ') >= 3:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    recycled = read(log).count('recycling app_')
    print('recycled %d workers under %d requests, %d failed, at least %d RUNNING'
          % (recycled, counts[0], counts[1], lowest))
    assert not pids & first, 'not every worker was recycled within 30 s'
    assert counts[1] == 0, errors[:3]
    assert counts[0] > 300
    assert lowest >= 2                  # one at a time
    # each recycle counted for its process (fcgi.recordRecycle), none an unexpected exit
    # (the guard counts one before it logs it, and may go on recycling)
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert recycled <= status['recycles'] <= read(log).count('recycling app_') + 1
    assert status['unexpected_exits'] == 0 and status['respawns'] >= 3


def test_queue_flood_raises_exactly_one_alarm(supervisor_factory, tmp_path):
    alarms = tmp_path / 'alarms'
    sup, log = guarded(supervisor_factory, tmp_path, [PoolSpec(numprocs=1, backlog=8)],
                       "--pool app --queue-alarm 80 --alarm-command "
                       "'echo $FCGI_GUARD_ALARM $FCGI_GUARD_POOL >> %s'" % alarms)
    clients = connect(sup.pool('app').socket_url, 12)
    try:
        sup.wait_for(lambda: 'ALARM' in read(log), 2 * 5 + 3, 'the queue alarm')
        time.sleep(5.5)                 # one more check with the queue full
    finally:
        for client in clients:
            client.close()
    # The check right after may still see new drops (SYN retries): 3 checks.
    sup.wait_for(lambda: 'back to normal' in read(log), 3 * 5 + 3, 'the end of it')
    text = read(log)
    assert text.count('ALARM') == 1
    assert 'ALARM pool app: listen queue alarm: listen queue' in text
    assert read(alarms) == 'queue app\n'


def test_crash_loop_raises_the_alarm_also_after_a_reload(supervisor_factory, tmp_path):
    crashy = PoolSpec(numprocs=2, command='python -c "import time; time.sleep(1.2); '
                                          'raise SystemExit(1)"')
    sup, log = guarded(supervisor_factory, tmp_path, [crashy], '--crash-threshold 3/30',
                       wait_running=False)
    sup.wait_for(lambda: 'ALARM' in read(log), 10, 'the crash alarm')
    time.sleep(2.5)                     # more exits, still the same episode
    text = read(log)
    assert text.count('ALARM') == 1
    assert 'ALARM pool app: crash loop: 3 unexpected exits within 30 s' in text
    sup.ctl('reload', check=True)
    sup.wait_for(lambda: read(log).count('ALARM') == 2, 15, 'the alarm after reload')


def connect(url, count):
    """count non-blocking TCP connections to a pool, none of them sending."""
    host, port = url[len('tcp://'):].rsplit(':', 1)
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect((host, int(port)))
        except BlockingIOError:
            pass
        clients.append(client)
    return clients


def test_sample_conf_runs_as_shipped(supervisor_factory, tmp_path):
    """sample_confs/fcgi-guard.conf with only its paths and port moved."""
    from supervisor_fcgi_ext.lab.harness import free_port, resolve_command
    sample = os.path.join(os.path.dirname(TESTS_DIR), 'sample_confs', 'fcgi-guard.conf')
    with open(sample) as f:
        text = f.read()
    logdir = str(tmp_path)
    text = (text.replace('/var/log/supervisor', logdir)
            .replace('127.0.0.1:9000', '127.0.0.1:%d' % free_port())
            .replace('command = fcgi-worker', 'command = ' + resolve_command('fcgi-worker'))
            .replace('command = fcgi-guard', 'command = ' + resolve_command('fcgi-guard')))
    sup = supervisor_factory([], workdir=str(tmp_path / 'sup'), extra_sections=text)
    sup.wait_for(lambda: len(sup.pids('app')) == 6, 10, '6 workers RUNNING')
    log = os.path.join(logdir, 'fcgi_guard.log')
    sup.wait_for(lambda: 'guarding app' in read(log), 10, 'the guard to start')
    info = sup.rpc.supervisor.getProcessInfo('fcgi_guard')
    assert info['statename'] == 'RUNNING'
