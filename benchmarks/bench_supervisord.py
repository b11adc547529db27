"""supervisord's own CPU with and without the plugin: idle, and under load.

    python benchmarks/bench_supervisord.py [--seconds 30] [--workers 64]
                                           [--rate 1000] [--load-workers 6]
                                           [--settle 3] [--only all|idle|loaded]
                                           [--socket tcp|unix] [--rounds 1]
                                           [--host-traffic 0]
                                           [--plugin-option name=value ...]

(``--seconds 1 --workers 2 --rate 50 --load-workers 1 --settle 0.5`` runs
both cases in a few seconds.)

idle: a real supervisord (lab/harness.py) runs --workers fcgi-workers in
one [fcgi-program] and --workers ``sleep`` processes in another (workers
that never touch the scoreboard or the socket); nothing is sent to them.
loaded: one pool of --load-workers fcgi-workers behind a real nginx gets a
steady --rate requests/s (lab/loadstream.py: 8 keep-alive clients, each
sending on a schedule).  Each case runs twice, supervisord without the
plugin's sections and with them (its defaults, or --plugin-option), and
reads supervisord's CPU time over --seconds, after --settle seconds for
start-up to pass: the nanoseconds of /proc/PID/schedstat (supervisord has one
thread), not utime + stime, which count whole clock ticks (one in 20 s is
0.05 % of a core).  --rounds repeats both, alternating, and reports the
medians.  --host-traffic RATE opens and closes RATE connections a second to
a listener of this script's all along, as the other services of a host do:
they move the netns' PassiveOpens and fill the kernel's connection table
with TIME_WAIT sockets, which every connection dump walks.  Goals (issue 15): idle, with the
plugin, at most 0.3 % of a core; loaded, at most 2 points of a core above
supervisord without it (which does nothing for requests: its figure is its
idle one).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time

from supervisor_fcgi_ext.lab.harness import Nginx, PoolSpec, Supervisor, find_nginx
from supervisor_fcgi_ext.lab.loadstream import RequestStream

TICKS = os.sysconf('SC_CLK_TCK')
IDLE_GOAL = 0.3       # % of a core, with the plugin
LOADED_GOAL = 2.0     # points of a core above supervisord without it


def cpu_seconds(pid):
    """CPU time of ``pid``'s main thread so far (not its children's): the
    scheduler's nanoseconds, else utime + stime in clock ticks."""
    try:
        with open('/proc/%d/schedstat' % pid) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


class HostTraffic(threading.Thread):
    """``rate`` connections a second to a listener of our own, the server
    side closing first (its TIME_WAIT stays in the table for 60 s)."""

    def __init__(self, rate):
        super().__init__(daemon=True)
        self.rate, self.stopped = rate, threading.Event()
        self.listener = socket.create_server(('127.0.0.1', 0))

    def run(self):
        address = self.listener.getsockname()
        while not self.stopped.wait(1.0 / self.rate):
            client = socket.create_connection(address)
            self.listener.accept()[0].close()
            client.close()

    def stop(self):
        self.stopped.set()
        self.join()
        self.listener.close()


def pools_for(case, args):
    if case == 'idle':
        return [PoolSpec('ref', 'fcgi-worker', numprocs=args.workers, socket=args.socket),
                PoolSpec('sleepers', 'sleep 1000000', numprocs=args.workers,
                         socket=args.socket)]
    return [PoolSpec('app', 'fcgi-worker', numprocs=args.load_workers, socket=args.socket)]


def measure(case, plugin, args, options):
    """supervisord's CPU in % of a core over args.seconds, and the req/s
    the stream got (loaded) or None."""
    pools = pools_for(case, args)
    sup = Supervisor(pools, plugin_options=options if plugin else None,
                     rpcinterface=plugin, ctlplugin=plugin)
    sup.start(timeout=60 + args.workers)
    try:
        if case == 'idle':
            time.sleep(args.settle)
            return _cpu_over(sup.pid, args.seconds), None
        with Nginx(pools[0].socket_url, workdir=os.path.join(sup.workdir, 'nginx')) as nginx:
            with RequestStream(nginx.port, rate=args.rate) as stream:
                if not stream.wait_requests(1, 30):
                    raise RuntimeError('the pool answered nothing in 30 s')
                time.sleep(args.settle)
                before = stream.result.requests
                cpu = _cpu_over(sup.pid, args.seconds)
                rate = (stream.result.requests - before) / args.seconds
            if stream.result.failed:
                raise RuntimeError('%d requests failed: %s' % (stream.result.failed,
                                                               stream.result.statuses))
        return cpu, rate
    finally:
        sup.stop()


def _cpu_over(pid, seconds):
    began, cpu0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - began)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=30.0, help='measured, per run')
    parser.add_argument('--workers', type=int, default=64,
                        help='idle: fcgi-workers, and as many sleep processes')
    parser.add_argument('--rate', type=float, default=1000.0, help='loaded: requests/s')
    parser.add_argument('--load-workers', type=int, default=6)
    parser.add_argument('--settle', type=float, default=3.0,
                        help='seconds after start before measuring')
    parser.add_argument('--only', choices=('all', 'idle', 'loaded'), default='all')
    parser.add_argument('--socket', choices=('tcp', 'unix'), default='tcp',
                        help="the pools' sockets")
    parser.add_argument('--host-traffic', type=float, default=0.0, metavar='RATE',
                        help='connections/s to another listener all along (0: none)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='runs of each case without and with the plugin, alternating')
    parser.add_argument('--plugin-option', action='append', default=[], metavar='NAME=VALUE',
                        help='an [rpcinterface:fcgi] option for the runs with the plugin')
    args = parser.parse_args(argv)
    options = dict(option.split('=', 1) for option in args.plugin_option)
    cases = ('idle', 'loaded') if args.only == 'all' else (args.only,)
    if 'loaded' in cases:
        find_nginx()
    print('supervisord CPU over %gs per run (%s, %s sockets); idle: %d fcgi-workers + %d '
          'sleep; loaded: %g req/s through %d fcgi-workers; host traffic %g connections/s'
          % (args.seconds, ', '.join('%s=%s' % kv for kv in options.items()) or 'defaults',
             args.socket, args.workers, args.workers, args.rate, args.load_workers,
             args.host_traffic), flush=True)
    traffic = HostTraffic(args.host_traffic) if args.host_traffic > 0 else None
    if traffic is not None:
        traffic.start()
    try:
        rows = run_cases(cases, args, options)
    finally:
        if traffic is not None:
            traffic.stop()
    report(cases, rows, args)


def run_cases(cases, args, options):
    """{(case, with plugin): (median % of a core, req/s)}."""
    runs = {}
    for case in cases:
        for _ in range(args.rounds):
            for plugin in (False, True):
                cpu, rate = measure(case, plugin, args, options)
                runs.setdefault((case, plugin), []).append((cpu, rate))
                print('  %-6s %-14s %7.3f %% of a core' % (
                    case, 'with plugin' if plugin else 'without plugin', cpu), flush=True)
    return {key: (statistics.median(cpu for cpu, _ in got), got[-1][1])
            for key, got in runs.items()}


def report(cases, rows, args):
    print('\n%-7s %-9s %9s %9s %9s  %s%s' % ('case', 'req/s', 'without', 'with', 'added',
                                             'goal', ' (medians)' if args.rounds > 1 else ''))
    for case in cases:
        (alone, _), (with_plugin, rate) = rows[case, False], rows[case, True]
        added = with_plugin - alone
        if case == 'idle':
            goal = 'with <= %.1f %%: %s' % (IDLE_GOAL, 'met' if with_plugin <= IDLE_GOAL
                                            else 'NOT met')
        else:
            goal = 'added <= %.1f points: %s' % (LOADED_GOAL, 'met' if added <= LOADED_GOAL
                                                 else 'NOT met')
        print('%-7s %-9s %8.3f%% %8.3f%% %8.3f%%  %s' % (
            case, '-' if rate is None else '%.0f' % rate, alone, with_plugin, added, goal))


if __name__ == '__main__':
    main()
