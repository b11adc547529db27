"""Pools that size themselves: what they cost and how fast they react.

Prints, side by side in one run:

    first request   an ondemand pool with no worker: connection -> answer
                    (FastCGI, straight to the pool socket), next to the
                    worker's own start time (the same worker started by hand
                    on a socket, spawn -> first answer); the difference is
                    what supervisord and socket activation add (goal <= 100 ms)
    burst           a dynamic pool (start 2, spares 2..4, numprocs 12) under
                    60 concurrent 1 s requests through nginx: seconds until
                    it runs 12 workers, failed requests, max_children_reached
    idle CPU        supervisord's CPU (utime+stime from /proc) over a quiet
                    interval, for the same pool static, dynamic and ondemand
    idle memory     RSS of the workers (plus supervisord) of the idle pool,
                    static vs ondemand

    python benchmarks/bench_pm.py [--rounds 5] [--idle-seconds 10]
                                  [--numprocs 6] [--only NAME]
"""
import argparse
import contextlib
import datetime
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import (BIN_DIR, Nginx, PoolSpec, Supervisor,
                                             wait_for)
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir

WORKER = os.path.join(BIN_DIR, 'fcgi-worker')
DYNAMIC = {'app.pm': 'dynamic', 'app.pm.start_servers': '2',
           'app.pm.min_spare_servers': '2', 'app.pm.max_spare_servers': '4'}
ONDEMAND = {'app.pm': 'ondemand', 'app.pm.process_idle_timeout': '1'}
CLK_TCK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid):
    try:
        with open('/proc/%d/statm' % pid) as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        return 0


def live_pids(sup):
    return [i['pid'] for i in sup.rpc.supervisor.getAllProcessInfo()
            if i['pid']]


@contextlib.contextmanager
def started(server, **start):
    """The server started (without waiting for every worker), then stopped."""
    try:
        server.start(**start)
        yield server
    finally:
        server.stop()


def pool(numprocs, options):
    spec = PoolSpec('app', WORKER, numprocs=numprocs,
                    extra={'startsecs': 0, 'stopwaitsecs': 10})
    return spec, Supervisor([spec], plugin_options=options)


# -- first request ---------------------------------------------------------

def own_start_time(board):
    """The worker started by hand on a listening socket, writing its slot
    as under supervisord: spawn -> first answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)
    address = 'tcp://127.0.0.1:%d' % sock.getsockname()[1]
    env = dict(os.environ, SUPERVISOR_GROUP_NAME='bench')
    env[scoreboard.ENV_VAR] = board
    begun = time.monotonic()
    proc = subprocess.Popen([WORKER], stdin=sock.fileno(), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fcgi_request(address, timeout=30)
        return time.monotonic() - begun
    finally:
        proc.terminate()
        proc.wait(10)
        sock.close()


def spawn_time(log_path):
    """When supervisord logged its last 'spawned:' line (epoch seconds)."""
    with open(log_path) as f:
        line = [l for l in f if "spawned: '" in l][-1]
    return datetime.datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S,%f').timestamp()


def first_request(args):
    """Rounds alternate between the two, so both see the same machine load."""
    spec, sup = pool(args.numprocs, ONDEMAND)
    own, ondemand, to_spawn = [], [], []
    with started(sup, wait_running=False), tempfile.TemporaryDirectory() as board:
        ensure_pool_dir(board, 'bench')
        for _ in range(args.rounds):
            own.append(own_start_time(board))
            wait_for(lambda: sup.rpc.fcgi.getPoolStatus('app')['pm_state'] == 'watching',
                     30, 'no worker running, activation armed')
            connected = time.time()
            fcgi_request(spec.socket_url, timeout=30)
            ondemand.append(time.time() - connected)
            to_spawn.append(spawn_time(sup.log_path) - connected)
    own_ms, pool_ms, spawn_ms = (statistics.median(v) * 1000
                                 for v in (own, ondemand, to_spawn))
    return [('first request, worker started by hand', '%.0f ms' % own_ms),
            ('first request, ondemand pool, no worker', '%.0f ms' % pool_ms),
            ('  added by supervisord + activation', '%+.0f ms (goal <= 100)'
             % (pool_ms - own_ms)),
            ('  connection -> worker spawned (log)', '%.0f ms' % spawn_ms)]


# -- burst -----------------------------------------------------------------

def burst(args):
    spec, sup = pool(12, DYNAMIC)
    with started(sup, wait_running=False), started(Nginx(spec.socket_url)) as nginx:
        wait_for(lambda: len(live_pids(sup)) == 2, 20, 'start_servers running')
        failed = []

        def one():
            try:
                urllib.request.urlopen(nginx.url + '/?sleep=1', timeout=120).read()
            except OSError as e:
                failed.append(e)
        threads = [threading.Thread(target=one, daemon=True) for _ in range(60)]
        begun = time.monotonic()
        for thread in threads:
            thread.start()
        reached = None
        while any(t.is_alive() for t in threads):
            if reached is None and len(live_pids(sup)) >= 12:
                reached = time.monotonic() - begun
            time.sleep(0.05)
        took = time.monotonic() - begun
        status = sup.rpc.fcgi.getPoolStatus('app')
    return [('burst: 12 workers reached after',
             '%.1f s' % reached if reached is not None else 'never'),
            ('burst: 60 x 1 s requests answered in', '%.1f s, %d failed'
             % (took, len(failed))),
            ('burst: max_children_reached, spawns', '%d, %d'
             % (status['max_children_reached'], status['spawns']))]


# -- idle cost ---------------------------------------------------------------

def idle_cost(args):
    rows_cpu, memory = [], {}
    for name, options in (('static', {}), ('dynamic', DYNAMIC),
                          ('ondemand', ONDEMAND)):
        spec, sup = pool(args.numprocs, options)
        with started(sup, wait_running=False):
            expected = {'static': args.numprocs, 'dynamic': 2, 'ondemand': 0}[name]
            wait_for(lambda: len(live_pids(sup)) == expected, 30,
                     '%d workers of the %s pool' % (expected, name))
            time.sleep(1.0)
            before = cpu_seconds(sup.pid)
            time.sleep(args.idle_seconds)
            used = cpu_seconds(sup.pid) - before
            rows_cpu.append(('idle CPU of supervisord, %s pool' % name,
                             '%.2f %% of a CPU' % (100 * used / args.idle_seconds)))
            workers = sum(rss_bytes(pid) for pid in live_pids(sup))
            memory[name] = (workers, rss_bytes(sup.pid))
    rows_mem = [('idle memory, %s pool: workers + supervisord' % name,
                 '%.1f MB + %.1f MB' % (memory[name][0] / 1e6, memory[name][1] / 1e6))
                for name in ('static', 'ondemand')]
    return rows_cpu + rows_mem


BENCHES = [('first', first_request), ('burst', burst), ('idle', idle_cost)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5,
                        help='first requests measured (median shown)')
    parser.add_argument('--idle-seconds', type=float, default=10.0)
    parser.add_argument('--numprocs', type=int, default=6)
    parser.add_argument('--only', choices=[name for name, _ in BENCHES])
    args = parser.parse_args(argv)
    rows = []
    for name, bench in BENCHES:
        if args.only in (None, name):
            rows += bench(args)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print('%-*s  %s' % (width, label, value))
    return 0


if __name__ == '__main__':
    sys.exit(main())
