"""Exact per-PID counts: real supervisord, real reference workers, the plugin.

Every test compares what the clients saw (the ``ProcessId:`` bodies) with
what fcgi.getPoolStatus says, pid by pid, across the ways a worker ends.
"""
import collections
import os
import pwd
import shutil
import signal
import stat
import subprocess
import threading
import time

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import FastCGIError, fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec


def answer_pids(url, count, uri='/', threads=4):
    """Send count requests (threads at a time); Counter of answering pids."""
    seen = collections.Counter()
    lock = threading.Lock()

    def worker(n):
        for _ in range(n):
            body = fcgi_request(url, uri=uri, timeout=30).body
            with lock:
                seen[int(body.split(b':')[1])] += 1
    share = [count // threads + (i < count % threads) for i in range(threads)]
    pool = [threading.Thread(target=worker, args=(n,)) for n in share]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return seen


def status(sup, name='app'):
    return sup.rpc.fcgi.getPoolStatus(name)


def per_pid(pool_status):
    return {p['pid']: p['requests'] for p in pool_status['processes']
            if p['pid'] and p['requests']}


def settled(sup, total):
    """The status once every answered request is counted (slots are updated
    just after the answer is sent)."""
    sup.wait_for(lambda: status(sup)['requests'] >= total
                 and status(sup)['active_processes'] == 0, 5,
                 '%d requests counted' % total)
    return status(sup)


def test_per_pid_requests_equal_the_bodies_received(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=4)])
    seen = answer_pids(sup.pool('app').socket_url, 60)
    pool = settled(sup, 60)
    assert per_pid(pool) == dict(seen)
    assert pool['requests_source'] == 'exact'
    assert pool['accepted_conn'] == pool['requests'] == 60
    assert {p['requests_source'] for p in pool['processes']} == {'exact'}
    assert {p['worker_state'] for p in pool['processes']} == {'idle'}


def test_reset_starts_every_count_afresh(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    url = sup.pool('app').socket_url
    answer_pids(url, 10)
    settled(sup, 10)
    sup.rpc.fcgi.resetStatistics('app')
    assert status(sup)['requests'] == 0
    assert per_pid(status(sup)) == {}
    seen = answer_pids(url, 6)
    pool = settled(sup, 6)
    assert (pool['requests'], per_pid(pool)) == (6, dict(seen))


def test_counts_of_recycled_workers_stay_in_the_pool_totals(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2, command='fcgi-worker --max-requests 5')])
    seen = answer_pids(sup.pool('app').socket_url, 30, threads=1)
    assert len(seen) > 2          # workers were recycled and respawned
    sup.wait_for(lambda: len(sup.pids('app')) == 2, 10, 'both workers back')
    pool = settled(sup, 30)
    assert (pool['requests'], pool['accepted_conn']) == (30, 30)
    # the live workers' own counts are exact too
    live = set(sup.pids('app').values())
    assert per_pid(pool) == {pid: n for pid, n in seen.items() if pid in live}


def test_restart_keeps_the_counts_of_the_stopped_workers(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=3)])
    answer_pids(sup.pool('app').socket_url, 12)
    settled(sup, 12)
    assert sup.ctl('restart', 'app:*').returncode == 0
    pool = status(sup)
    assert pool['requests'] == 12
    assert per_pid(pool) == {}    # the new workers have served nothing yet


def test_sigkill_mid_request_loses_only_that_request(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    url = sup.pool('app').socket_url
    answer_pids(url, 8)
    settled(sup, 8)
    failures = []

    def slow():
        try:
            fcgi_request(url, uri='/?sleep=10', timeout=20)
        except FastCGIError as e:
            failures.append(e)
    client = threading.Thread(target=slow)
    client.start()
    sup.wait_for(lambda: status(sup)['active_processes'] == 1, 5, 'a busy worker')
    processes = status(sup)['processes']
    victim = [p for p in processes if p['worker_state'] == 'running'][0]
    assert victim['request_uri'] == '/?sleep=10'
    # what each worker holds, from its slot: exact, no /proc walk
    assert sorted(p['connections'] for p in processes) == [0, 1]
    assert victim['connections'] == 1
    os.kill(victim['pid'], signal.SIGKILL)
    client.join(20)
    assert len(failures) == 1
    sup.wait_for(lambda: len(sup.pids('app')) == 2
                 and victim['pid'] not in sup.pids('app').values(), 10,
                 'the killed worker respawned')
    pool = status(sup)
    # the killed worker's slot was read once more when supervisor saw it exit:
    # its 9th request was begun (counted, as PHP-FPM counts) but not answered
    assert pool['requests'] == 9
    seen = answer_pids(url, 4)
    assert settled(sup, 13)['requests'] == 13
    assert all(pid in sup.pids('app').values() for pid in seen)


@pytest.fixture
def board():
    """A scoreboard directory of the test's own (an explicit one is not
    removed by the plugin, unlike its automatic one)."""
    path = '/dev/shm/sfe-test-%d' % os.getpid()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'fifo'])
def test_a_corrupt_slot_costs_a_warning_not_supervisord(supervisor_factory, damage,
                                                        board):
    sup = supervisor_factory([PoolSpec(numprocs=2)],
                             plugin_options={'scoreboard_dir': board})
    answer_pids(sup.pool('app').socket_url, 4)
    settled(sup, 4)
    name, pid = sorted(sup.pids('app').items())[0]
    path = '%s/app/%d.slot' % (board, pid)
    os.unlink(path)
    if damage == 'garbage':
        with open(path, 'wb') as f:
            f.write(os.urandom(512))
    elif damage == 'truncated':
        with open(path, 'wb') as f:
            f.write(b'SVFCGISB')
    else:
        os.mkfifo(path)
    started = time.monotonic()
    pool = status(sup)
    assert time.monotonic() - started < 1.0
    assert [w for w in pool['warnings'] if w.startswith(name)], pool['warnings']
    damaged = [p for p in pool['processes'] if p['pid'] == pid][0]
    assert damaged['requests_source'] == 'sampled'
    time.sleep(1.2)     # some loop samples with the damaged slot
    assert sup.rpc.supervisor.getState()['statename'] == 'RUNNING'
    assert sup.ctl('fcgi_status').returncode == 0
    # the worker's exit harvests (and removes) whatever is at its path
    sup.ctl('stop', 'app:%s' % name)
    assert not os.path.lexists(path)


def as_nobody(command):
    nobody = pwd.getpwnam('nobody')
    return subprocess.run(
        ['/bin/sh', '-c', command], cwd='/', capture_output=True,
        preexec_fn=lambda: (os.setgroups([]), os.setgid(nobody.pw_gid),
                            os.setuid(nobody.pw_uid)))


@pytest.mark.skipif(os.geteuid() != 0, reason='user= needs supervisord as root')
def test_a_pool_with_user_gets_a_directory_only_that_user_can_write(
        supervisor_factory, board):
    # sleep, not fcgi-worker: this machine's Python lives under /root, which
    # nobody cannot read; the directory is made before the worker forks
    sup = supervisor_factory([PoolSpec(numprocs=1, user='nobody', command='sleep 1000'),
                              PoolSpec(name='other', numprocs=1, command='sleep 1000')],
                             plugin_options={'scoreboard_dir': board})
    assert len(sup.pids('app')) == 1
    app_dir = os.stat(os.path.join(board, 'app'))
    assert (app_dir.st_uid, stat.S_IMODE(app_dir.st_mode)) == \
        (pwd.getpwnam('nobody').pw_uid, 0o700)
    other_dir = os.stat(os.path.join(board, 'other'))
    assert (other_dir.st_uid, stat.S_IMODE(other_dir.st_mode)) == (0, 0o700)
    assert as_nobody('touch %s/app/1.slot' % board).returncode == 0
    assert as_nobody('touch %s/other/1.slot' % board).returncode != 0
