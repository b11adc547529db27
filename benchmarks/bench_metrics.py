"""What a scrape of GET /fcgi/metrics costs supervisord, next to
fcgi.getPoolStatus, for pools of 8, 64 and 256 workers.

Part 1, server side: both share the pool's status (PoolMonitor.status, timed
by bench_status on real workers holding real connections); then a scrape
turns it into metric families and prometheus_client's text (or OpenMetrics)
encoding, where getPoolStatus does XML-RPC marshalling.

Part 2, round trip through a real supervisord: GET /fcgi/metrics next to
getPoolStatus, both through supervisor's HTTP layer (whose delayed-ACK floor
bench_status explains).

    python benchmarks/bench_metrics.py [--runs 50] [--workers 8,64,256]
"""
import argparse
import http.client

from prometheus_client import exposition, openmetrics

from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.supervisord import metrics

from bench_sockstats import median_ms   # its neighbours in benchmarks/
from bench_status import server_side


class Statuses:
    """The `collect()` prometheus_client's encoders read, over statuses."""

    def __init__(self, statuses):
        self.statuses = statuses

    def collect(self):
        return metrics.families(self.statuses)


def scrape_cost(status, runs):
    """(text, OpenMetrics) encoding of one pool's status, in ms."""
    source = Statuses([status])
    return (median_ms(lambda: exposition.generate_latest(source), runs),
            median_ms(lambda: openmetrics.exposition.generate_latest(source), runs))


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--workers', default='8,64,256')
    args = parser.parse_args()
    sizes = [int(w) for w in args.workers.split(',')]
    print('server side (median of %d):' % args.runs)
    # Prometheus itself asks for OpenMetrics first (its default Accept)
    print('  %-8s %-8s %9s %9s %9s %9s %11s %11s %11s' % (
        'workers', 'counts', 'status', 'marshal', 'text', 'openmet',
        'getPoolSt', 'scrape txt', 'scrape om'))
    for workers in sizes:
        for kind in ('sampled', 'exact'):
            status, cost, marshal = server_side(kind, workers, args.runs)
            text, om = scrape_cost(status, args.runs)
            print('  %-8d %-8s %7.2fms %7.2fms %7.2fms %7.2fms %9.2fms %9.2fms %9.2fms'
                  % (workers, kind, cost, marshal, text, om, cost + marshal,
                     cost + text, cost + om), flush=True)
    print('round trip through supervisord (median of %d):' % args.runs)
    print('  %-8s %16s %16s' % ('workers', 'getPoolStatus', '/fcgi/metrics'))
    for workers in sizes:
        ours_rpc, ours_http = round_trips(workers, args.runs)
        print('  %-8d %14.2fms %14.2fms' % (workers, ours_rpc, ours_http), flush=True)


if __name__ == '__main__':
    main()
