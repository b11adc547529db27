"""Issue 11 item 2: a daemonized supervisord (supervisor's default) keeps its
automatic scoreboard when another supervisord with the plugin starts.

The old directory was named after the pid that exits when supervisord
daemonizes, so the next supervisord removed it as stale and exact counts
were lost without a word.  Real daemonized supervisord, real workers.
"""
from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor

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
