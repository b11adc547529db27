"""What fcgi.getPoolStatus costs supervisord, for pools of 8, 64 and 256 workers.

Part 1, server side: the plugin's own code path (PoolMonitor.status plus
XML-RPC marshalling: xmlmarshal's reply, then what supervisor's
xmlrpc_marshal does with it), run here on a real listening socket shared by
real worker processes.  Beside it, "xmlrpc.client": the marshalling as it
was before xmlmarshal (xmlrpc_safe, then xmlrpc.client alone), timed in the
same run.  Two kinds of worker: tests/holdconn.py (writes no scoreboard: its
connections are sampled) and fcgi-worker (exact counts from its scoreboard
slot).  The cases:

- sampled busy: holdconn workers holding 256 open client connections between them;
- exact busy: fcgi-workers holding 256 slow requests between them;
- exact idle: fcgi-workers waiting for a request (the commonest pool);
- exact changed: fcgi-workers of which every one answered a request since
  the status before (a loaded pool polled by fcgi-guard): requests are sent
  between two timed statuses, none while one is timed.

Part 2, round trip through a real supervisord, next to supervisor's own
getAllProcessInfo: both include supervisor's HTTP layer (a few passes of
supervisord's loop per call, each visiting every process) and xmlrpc.client's
parsing of the reply, in pure Python: at 256 workers most of the time.
bench_roundtrip.py takes a round trip apart.

    python benchmarks/bench_status.py [--runs 50] [--workers 8,64,256]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import slots
from supervisor_fcgi_ext.supervisord.slotcache import DIR_SETTLE
from supervisor_fcgi_ext.supervisord.xmlmarshal import reply, xmlrpc_safe
from supervisor_fcgi_ext.lab.fcgiclient import FastCGIError, fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor, resolve_command, wait_for
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView

from bench_sockstats import median_ms   # its neighbour in benchmarks/

HERE = os.path.dirname(os.path.abspath(__file__))
HOLDCONN = os.path.join(os.path.dirname(HERE), 'tests', 'holdconn.py')
CONNECTIONS = 256
CASES = (('sampled', 'busy'), ('exact', 'busy'), ('exact', 'idle'), ('exact', 'changed'))


def start_workers(kind, workers, per_worker, listener, board):
    env = dict(os.environ, SUPERVISOR_GROUP_NAME='app')
    env[scoreboard.ENV_VAR] = board
    if kind == 'sampled':
        argv = [sys.executable, HOLDCONN, str(per_worker)]
    else:
        argv = resolve_command('fcgi-worker').split() + ['--threads', str(per_worker)]
    return [subprocess.Popen(argv, stdin=listener.fileno(), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)]


def slow_request(url):
    try:
        fcgi_request(url, uri='/?sleep=30', timeout=60)
    except FastCGIError:  # the benchmark kills the worker mid-request
        pass


def open_connections(kind, address, count):
    if kind == 'sampled':
        return [socket.create_connection(address) for _ in range(count)]
    url = 'tcp://%s:%d' % address
    threads = [threading.Thread(target=slow_request, args=(url,), daemon=True)
               for _ in range(count)]
    for thread in threads:
        thread.start()
    return []


def quick_requests(url, pids, board, before, timeout=60):
    """Send requests from a few threads until every pid's slot counts more
    requests than ``before`` says; return {pid: requests} then."""
    done = threading.Event()

    def send():
        while not done.is_set():
            try:
                fcgi_request(url, uri='/', timeout=10)
            except (FastCGIError, OSError):
                pass
    threads = [threading.Thread(target=send, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(isinstance(s, scoreboard.Slot) and s.requests > before.get(pid, 0)
                             for pid, s in slots.read_pool(board, 'app', pids).items()),
                 timeout, 'a request answered by every worker')
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return {pid: s.requests for pid, s in slots.read_pool(board, 'app', pids).items()}


def changed_ms(monitor, view, url, board, runs):
    """The median ms of a status after every worker answered a request."""
    pids = [p.pid for p in view.processes]
    counts = quick_requests(url, pids, board, {})
    monitor.status(view)
    times = []
    for _ in range(runs):
        counts = quick_requests(url, pids, board, counts)
        times.append(median_ms(lambda: monitor.status(view), 1))
    return statistics.median(times)


def all_idle(board, pids):
    return all(isinstance(s, scoreboard.Slot) and s.state == 'idle'
               for s in slots.read_pool(board, 'app', pids).values())


def marshal_reply(value):
    """What supervisor's xmlrpc_marshal does with a method's answer."""
    return xmlrpc.client.dumps((value,), methodresponse=True)


def server_side(kind, workers, runs, case='busy'):
    """(status, ms of PoolMonitor.status, ms of its reply) of a pool of
    ``workers`` of ``kind`` (sampled, exact) in ``case`` (busy, idle,
    changed: exact only)."""
    per_worker = max(1, CONNECTIONS // workers)
    board = tempfile.mkdtemp(prefix='sfe-bench-')
    slots.ensure_pool_dir(board, 'app')
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1024)
    procs = start_workers(kind, workers, per_worker, listener, board)
    try:
        url = 'tcp://%s:%d' % listener.getsockname()
        view = PoolView('app', url, 1024,
                        listener, [ProcessView('app_%03d' % i, p.pid, 'RUNNING', 0)
                                   for i, p in enumerate(procs)], False)
        monitor = PoolMonitor('app', board)
        clients = []
        if case == 'busy':
            clients = open_connections(kind, listener.getsockname(), per_worker * workers)
            wait_for(lambda: monitor.status(view)['connections'] >= per_worker * workers,
                     60, 'connections held')
        else:
            wait_for(lambda: all_idle(board, [p.pid for p in procs]), 60, 'idle slots')
        # as in a pool running for a while: its directory older than DIR_SETTLE
        time.sleep(DIR_SETTLE)
        if case == 'changed':
            cost = changed_ms(monitor, view, url, board, runs)
        else:
            cost = median_ms(lambda: monitor.status(view), runs)
        status = monitor.status(view)
        marshal = median_ms(lambda: marshal_reply(reply(status)), runs)
        for client in clients:
            client.close()
        return status, cost, marshal
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        listener.close()
        shutil.rmtree(board, ignore_errors=True)


def round_trips(workers, runs):
    spec = PoolSpec(command='sleep 1000', numprocs=workers, extra={'startsecs': 0})
    with Supervisor([spec]) as sup:
        sup.wait_running(timeout=120)
        rpc = sup.rpc
        return (median_ms(rpc.fcgi.getAPIVersion, runs),
                median_ms(rpc.supervisor.getAllProcessInfo, runs),
                median_ms(lambda: rpc.fcgi.getPoolStatus('app'), runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--workers', default='8,64,256')
    args = parser.parse_args()
    sizes = [int(w) for w in args.workers.split(',')]
    print('server side (median of %d):' % args.runs)
    print('  %-8s %-8s %-8s %6s %10s %10s %10s %9s %15s' % (
        'workers', 'counts', 'case', 'conns', 'status', 'marshal', 'total', 'per wkr',
        'xmlrpc.client'))
    for workers in sizes:
        for kind, case in CASES:
            status, cost, marshal = server_side(kind, workers, args.runs, case)
            before = median_ms(lambda: marshal_reply(xmlrpc_safe(status)), args.runs)
            print('  %-8d %-8s %-8s %6d %8.2fms %8.2fms %8.2fms %7.1fus %13.2fms' % (
                workers, kind, case, status['connections'], cost, marshal,
                cost + marshal, (cost + marshal) * 1000 / workers, before), flush=True)
    print('round trip through supervisord (median of %d):' % args.runs)
    print('  %-8s %14s %20s %16s' % ('workers', 'getAPIVersion',
                                     'getAllProcessInfo', 'getPoolStatus'))
    for workers in sizes:
        empty, theirs, ours = round_trips(workers, args.runs)
        print('  %-8d %12.2fms %18.2fms %14.2fms' % (workers, empty, theirs, ours),
              flush=True)


if __name__ == '__main__':
    main()
