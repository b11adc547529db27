"""Issue 11 item 2: a daemonized supervisord (supervisor's default) keeps its
automatic scoreboard when another supervisord with the plugin starts.

The old directory was named after the pid that exits when supervisord
daemonizes, so the next supervisord removed it as stale and exact counts
were lost without a word.  A reload closes every fd >= 5 (the lock's too): the lock is taken again,
and the plugin's old loop hooks were closed before.  Real daemonized
supervisord, real workers.
"""
import fcntl
import os
from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.supervisord.boarddir import LOCK_NAME

REQUESTS = 24


def test_a_second_supervisord_leaves_a_daemonized_ones_scoreboard(supervisor_factory):
    first = supervisor_factory([PoolSpec(numprocs=2)], daemon=True)
    assert first.proc.wait(5) == 0 and first.pid != first.proc.pid   # it forked
    url = first.pool('app').socket_url
    for _ in range(REQUESTS):
        assert fcgi_request(url, timeout=30).body.startswith(b'ProcessId:')
    first.wait_for(lambda: first.rpc.fcgi.getPoolStatus('app')['requests'] == REQUESTS,
                   5, '%d requests counted' % REQUESTS)
    with Supervisor([PoolSpec(name='other', command='sleep 1000', numprocs=1)]):
        pass                              # starts (orphan cleanup) and stops
    pool = first.rpc.fcgi.getPoolStatus('app')
    assert (pool['requests'], pool['requests_source']) == (REQUESTS, 'exact')
    assert {p['requests_source'] for p in pool['processes']} == {'exact'}
    assert sum(p['requests'] for p in pool['processes']) == REQUESTS


def board_of(pid):
    """The scoreboard directory a worker was given."""
    with open('/proc/%d/environ' % pid, 'rb') as f:
        env = dict(v.split(b'=', 1) for v in f.read().split(b'\0') if b'=' in v)
    return env[b'SUPERVISOR_FCGI_SCOREBOARD'].decode()


def timerfds(pid):
    fds = os.listdir('/proc/%d/fd' % pid)
    return [fd for fd in fds if 'timerfd' in os.readlink('/proc/%d/fd/%s' % (pid, fd))]


def locked_by_someone(path):
    with open(os.path.join(path, LOCK_NAME)) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def test_a_reload_keeps_the_board_locked_and_samples_on_one_timer(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=1)], daemon=True)
    board = board_of(list(sup.pids('app').values())[0])
    assert locked_by_someone(board) and len(timerfds(sup.pid)) == 1
    assert sup.ctl('reload').returncode == 0

    def back():
        try:
            return len(sup.pids('app')) == 1
        except OSError:           # the reload closed the HTTP server for a while
            return False
    sup.wait_for(back, 20, 'the pool back after the reload')
    # the same directory, its lock taken again after cleanup_fds closed it,
    # and the old loop hooks closed before that: one timer, not two
    assert board_of(list(sup.pids('app').values())[0]) == board
    assert locked_by_someone(board) and len(timerfds(sup.pid)) == 1
    assert open(os.path.join(board, LOCK_NAME)).read() == '%d\n' % sup.pid
    url = sup.pool('app').socket_url
    for _ in range(3):
        fcgi_request(url, timeout=30)
    sup.wait_for(lambda: sup.rpc.fcgi.getPoolStatus('app')['requests'] == 3, 5,
                 'exact counts after the reload')
    assert 'sampling failed' not in open(sup.log_path).read()
