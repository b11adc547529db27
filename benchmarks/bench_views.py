"""What the status page and its JSON cost supervisord, next to getAllPoolStatus.

Part 1, in process: the three share the pool status (PoolMonitor.status on
real fcgi-workers with slow requests in flight, bench_status.server_side);
then getAllPoolStatus marshals XML-RPC, /fcgi/status renders the page and
/fcgi/status.json encodes JSON.  Median milliseconds per call.

Part 2, through a real supervisord with a pool of real fcgi-workers: the CPU
time supervisord itself spends per call (utime + stime from /proc over
--calls calls, so no client or network time is counted), and the median
round trip (which includes the ~40 ms delayed-ACK floor of supervisor's
HTTP layer on loopback, the same for all three).

    python benchmarks/bench_views.py [--runs 50] [--workers 8,64,256]
                                     [--calls 200] [--live-workers 8,64]
"""
import argparse
import http.client
import json
import os
import time

from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.supervisord import statuspage

from bench_sockstats import median_ms   # neighbours in benchmarks/
from bench_status import server_side

TICKS = os.sysconf('SC_CLK_TCK')


def in_process(workers, runs):
    status, cost, marshal = server_side('exact', workers, runs)
    pools = [status]
    page = median_ms(lambda: statuspage.render_page(pools, known=['app']).encode(), runs)
    as_json = median_ms(lambda: json.dumps(statuspage.safe_strings(pools)).encode(), runs)
    return cost, marshal, page, as_json


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS   # utime, stime


def per_call(pid, call, calls):
    """(supervisord CPU ms per call, median round trip ms)."""
    call()
    times = []
    before = cpu_seconds(pid)
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    cpu = (cpu_seconds(pid) - before) * 1000 / calls
    times.sort()
    return cpu, times[len(times) // 2] * 1000


def in_supervisord(workers, calls):
    with Supervisor([PoolSpec(numprocs=workers)]) as sup:
        sup.wait_running(timeout=120)
        rpc = sup.rpc
        conn = http.client.HTTPConnection('127.0.0.1', sup.port, timeout=60)

        def get(path):
            conn.request('GET', path)
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200, (path, reply.status, body[:200])
        return [per_call(sup.pid, call, calls) for call in (
            rpc.fcgi.getAllPoolStatus, lambda: get('/fcgi/status'),
            lambda: get('/fcgi/status.json'))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=50, help='in-process repeats')
    parser.add_argument('--workers', default='8,64,256', help='in-process pool sizes')
    parser.add_argument('--calls', type=int, default=200, help='calls to supervisord')
    parser.add_argument('--live-workers', default='8,64',
                        help='pool sizes under supervisord (fcgi-worker: ~21 MB each)')
    args = parser.parse_args()
    print('in process, median of %d (ms): status is shared by all three' % args.runs)
    print('  %-8s %8s %10s %10s %10s' % ('workers', 'status', 'xml-rpc', 'page', 'json'))
    for workers in [int(w) for w in args.workers.split(',')]:
        print('  %-8d %8.2f %10.2f %10.2f %10.2f' % ((workers,) + in_process(
            workers, args.runs)), flush=True)
    print('through supervisord, %d calls each: supervisord CPU ms per call '
          '(median round trip ms)' % args.calls)
    print('  %-8s %22s %20s %20s' % ('workers', 'getAllPoolStatus', '/fcgi/status',
                                     '/fcgi/status.json'))
    for workers in [int(w) for w in args.live_workers.split(',')]:
        cells = ['%6.2f (%6.1f)' % pair for pair in in_supervisord(workers, args.calls)]
        print('  %-8d %22s %20s %20s' % tuple([workers] + cells), flush=True)


if __name__ == '__main__':
    main()
