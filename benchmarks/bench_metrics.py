"""What a scrape of GET /fcgi/metrics costs supervisord, next to
fcgi.getPoolStatus, for pools of 8, 64 and 256 workers.

Part 1, server side: both share the pool's status (PoolMonitor.status, timed
by bench_status on real workers holding real connections); then a scrape
writes the Prometheus text (or OpenMetrics) with supervisord/exposition.py,
where getPoolStatus does XML-RPC marshalling (supervisord/xmlmarshal.py).
Beside it, in the same run, what prometheus_client's own encoders take for
the same text (the reference the tests hold ours to,
tests/supervisord/metricsref.py).  The goal (issue
12): a scrape within 2 ms of getPoolStatus, and linear in the workers.

A scrape keeps each process's lines for the next (supervisord/metricrows.py),
so ours are timed as a busy pool is scraped: each scrape's status as the
last but for the running requests' durations ("text", "openmet"), and, in
"txt chg", one where every process served a request since the last.

With --instructions, the writing (text, OpenMetrics) and the XML-RPC
marshalling of the same exact statuses again in instructions (callgrind: the
same on a loaded machine, where wall clock is not), each write of the same
status ("text", "openmet": an idle pool's) and of statuses moving as above
("txt mov", "txt chg"); "xmlrpc.c" is the marshalling before xmlmarshal
(xmlrpc_safe, then xmlrpc.client alone).

Part 2, round trip through a real supervisord: GET /fcgi/metrics next to
getPoolStatus, both through supervisor's HTTP layer (whose delayed-ACK floor
bench_status explains).

    python benchmarks/bench_metrics.py [--runs 50] [--workers 8,64,256]
                                       [--instructions]
"""
import argparse
import http.client
import itertools
import os
import pickle
import shutil
import sys
import tempfile

from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.supervisord import metrics
from supervisor_fcgi_ext.supervisord.xmlmarshal import reply, xmlrpc_safe

from bench_sockstats import median_ms   # its neighbours in benchmarks/
from bench_status import marshal_reply, server_side
from profile_worker import callgrind, instructions

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'tests', 'supervisord'))
import metricsref  # noqa: E402  (the reference, beside the tests that use it)

OPENMETRICS = 'application/openmetrics-text'
GOAL_MS = 2.0
WRITERS = {'text': lambda status: metrics.render([status]),
           'openmet': lambda status: metrics.render([status], OPENMETRICS),
           'marshal': lambda status: marshal_reply(reply(status)),
           'xmlrpc.c': lambda status: marshal_reply(xmlrpc_safe(status))}
# writers of statuses that move from one write to the next: (writer, fields moved)
MOVING = {'txt mov': ('text', ('request_duration',)),
          'txt chg': ('text', ('request_duration', 'requests', 'accepted_conn'))}
WRITES = 5       # per callgrind run, against a run of none


def moved(status, fields, count):
    """``count`` statuses after ``status``, each with ``fields`` of every
    process grown since the one before, as a pool's between two scrapes."""
    return [dict(status, processes=[dict(p, **{field: p[field] + step for field in fields})
                                    for p in status['processes']])
            for step in range(1, count + 1)]


def scrape_cost(status, runs):
    """ms to write one pool's status: (ours text, ours OpenMetrics, ours text
    when every process served a request, prometheus_client text,
    prometheus_client OpenMetrics)."""
    def ours(fields, accept):
        statuses = itertools.cycle(moved(status, fields, runs))
        metrics.render([status], accept)
        return median_ms(lambda: metrics.render([next(statuses)], accept), runs)
    return (ours(MOVING['txt mov'][1], ''), ours(MOVING['txt mov'][1], OPENMETRICS),
            ours(MOVING['txt chg'][1], ''),
            *(median_ms(lambda: metricsref.generate([status], accept), runs)
              for accept in ('', OPENMETRICS)))


def run_writes(path, what, count):
    """--run-writes: a pickled status written once by every writer (their
    first use), then ``count`` times by ``what`` (the statuses moving ones
    write made in every run)."""
    with open(path, 'rb') as f:
        status = pickle.load(f)
    statuses = {name: moved(status, fields, WRITES)
                for name, (_, fields) in MOVING.items()}
    for write in WRITERS.values():
        write(status)
    writer = WRITERS[MOVING[what][0] if what in MOVING else what]
    for i in range(count):
        writer(statuses[what][i] if what in MOVING else status)


def write_instructions(status, tmp):
    """{writer: instructions per write of ``status``}: each writer's run
    against one run that writes nothing more."""
    path = os.path.join(tmp, 'status.pickle')
    with open(path, 'wb') as f:
        pickle.dump(status, f)
    totals, kinds = {}, list(WRITERS) + list(MOVING)
    for what, count in [('text', 0)] + [(what, WRITES) for what in kinds]:
        proc, out = callgrind([sys.executable, __file__, '--run-writes', path, what,
                               str(count)], tmp, '%s-%d' % (what, count))
        if proc.wait(600):
            raise RuntimeError('%s failed under valgrind' % what)
        totals[what, count] = instructions(out)
    return {what: (totals[what, WRITES] - totals['text', 0]) / WRITES for what in kinds}


def print_instructions(statuses):
    """The table of instructions per write, and their linearity."""
    print('instructions per write, exact counts (callgrind; "k": thousands):')
    kinds = list(WRITERS) + list(MOVING)
    print('  %-8s' % 'workers' + ''.join(' %10s' % w for w in kinds)
          + ''.join(' %12s' % (w + '/wkr') for w in kinds))
    tmp = tempfile.mkdtemp(prefix='sfe-bench-metrics-')
    per_worker = {}
    try:
        for workers, status in sorted(statuses.items()):
            costs = write_instructions(status, tmp)
            per_worker[workers] = {what: cost / workers for what, cost in costs.items()}
            print('  %-8d' % workers
                  + ''.join(' %9.0fk' % (costs[w] / 1000) for w in kinds)
                  + ''.join(' %11.1fk' % (per_worker[workers][w] / 1000) for w in kinds),
                  flush=True)
    finally:
        shutil.rmtree(tmp, True)
    if len(per_worker) > 1:
        small, large = sorted(per_worker)[-2:]
        print('linearity: instructions per worker at %d vs %d (ratio; 1 is linear): '
              % (small, large) + ', '.join(
                  '%s %.2f' % (w, per_worker[large][w] / per_worker[small][w])
                  for w in kinds))


def round_trips(workers, runs):
    spec = PoolSpec(command='sleep 1000', numprocs=workers, extra={'startsecs': 0})
    with Supervisor([spec]) as sup:
        sup.wait_running(timeout=120)
        rpc = sup.rpc

        def get_metrics():
            conn = http.client.HTTPConnection('127.0.0.1', sup.port, timeout=30)
            conn.request('GET', '/fcgi/metrics')
            response = conn.getresponse()
            response.read()
            conn.close()
            assert response.status == 200, response.status
        return (median_ms(lambda: rpc.fcgi.getPoolStatus('app'), runs),
                median_ms(get_metrics, runs))


def verdicts(rows):
    """The goal and linearity lines of the server-side rows."""
    lines = ['goal: scrape - getPoolStatus <= %.0f ms (server side):' % GOAL_MS]
    for (workers, kind), (pool_status, text, om, _, _) in rows.items():
        lines.append('  %-4d %-8s ' % (workers, kind) + ', '.join(
            '%s %+.2f ms %s' % (name, scrape - pool_status,
                                'met' if scrape - pool_status <= GOAL_MS else 'NOT met')
            for name, scrape in (('text', text), ('OpenMetrics', om))))
    sizes = sorted({workers for workers, _ in rows})
    if len(sizes) > 1:
        small, large = sizes[-2], sizes[-1]
        lines.append('linearity: scrape ms per worker at %d vs %d (ratio; 1 is linear):'
                     % (small, large))
        for kind in ('sampled', 'exact'):
            per = [[value / workers for value in rows[workers, kind]]
                   for workers in (small, large)]
            lines.append('  %-8s ' % kind + ', '.join(
                '%s %.3f vs %.3f (%.2f)'
                % (name, per[0][i], per[1][i], per[1][i] / per[0][i])
                for i, name in ((1, 'scrape txt'), (2, 'scrape om'), (3, 'writing txt'),
                                (4, 'writing om'), (0, 'getPoolStatus'))))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--workers', default='8,64,256')
    parser.add_argument('--instructions', action='store_true',
                        help='also count the writing in instructions (valgrind)')
    parser.add_argument('--run-writes', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_writes:
        run_writes(args.run_writes[0], args.run_writes[1], int(args.run_writes[2]))
        return
    sizes = [int(w) for w in args.workers.split(',')]
    print('server side (median of %d; "prom_client": its encoders, the reference):'
          % args.runs)
    # Prometheus itself asks for OpenMetrics first (its default Accept)
    print('  %-8s %-8s %9s %9s %9s %9s %9s %11s %11s %11s %11s %11s' % (
        'workers', 'counts', 'status', 'marshal', 'text', 'openmet', 'txt chg',
        'getPoolSt', 'scrape txt', 'scrape om', 'prom_c txt', 'prom_c om'))
    rows, exact = {}, {}
    for workers in sizes:
        for kind in ('sampled', 'exact'):
            status, cost, marshal = server_side(kind, workers, args.runs)
            text, om, changed, their_text, their_om = scrape_cost(status, args.runs)
            rows[workers, kind] = (cost + marshal, cost + text, cost + om, text, om)
            if kind == 'exact':
                exact[workers] = status
            print('  %-8d %-8s %7.2fms %7.2fms %7.2fms %7.2fms %7.2fms %9.2fms %9.2fms'
                  ' %9.2fms %9.2fms %9.2fms'
                  % (workers, kind, cost, marshal, text, om, changed, cost + marshal,
                     cost + text, cost + om, cost + their_text, cost + their_om),
                  flush=True)
    print('\n'.join(verdicts(rows)))
    if args.instructions:
        if shutil.which('valgrind') is None:
            print('instructions: skipped, no valgrind on PATH (Debian: valgrind)')
        else:
            print_instructions(exact)
    print('round trip through supervisord (median of %d):' % args.runs)
    print('  %-8s %16s %16s' % ('workers', 'getPoolStatus', '/fcgi/metrics'))
    for workers in sizes:
        ours_rpc, ours_http = round_trips(workers, args.runs)
        print('  %-8d %14.2fms %14.2fms' % (workers, ours_rpc, ours_http), flush=True)


if __name__ == '__main__':
    main()
