"""Requests lost by pool restarts under a steady load through real nginx.

Each scenario starts a fresh supervisord (reference workers, the plugin with
hold_sockets on or off) and nginx, sends a steady request stream, runs one
pool operation in the middle of it and prints the failed requests and the
worst latency:

    restart      supervisorctl restart app:*
    fcgi_restart supervisorctl fcgi_restart app
    stop/start   supervisorctl stop app:*, a pause, supervisorctl start app:*
    update       command changed, supervisorctl reread + update
    deploy       command changed, supervisorctl reread + fcgi_restart app

    python benchmarks/bench_deploy.py [--numprocs 4] [--rate 300] [--pause 3]
                                      [--socket tcp|unix] [--only NAME]
                                      [--hold on|off|both]
"""
import argparse
import sys
import time

from supervisor_fcgi_ext.lab.harness import Nginx, PoolSpec, Supervisor
from supervisor_fcgi_ext.lab.loadstream import RequestStream

WORKER = 'fcgi-worker'
NEW_WORKER = 'fcgi-worker --threads 1'   # "a new release": another command


def restart(sup, args):
    sup.ctl('restart', 'app:*', check=True, timeout=60)


def fcgi_restart(sup, args):
    sup.ctl('fcgi_restart', 'app', '--batch', args.batch, check=True, timeout=120)


def stop_start(sup, args):
    sup.ctl('stop', 'app:*', check=True, timeout=60)
    time.sleep(args.pause)
    sup.ctl('start', 'app:*', check=True, timeout=60)


def _change_command(sup):
    sup.pool('app').command = NEW_WORKER
    sup.write_config()
    sup.ctl('reread', check=True)


def update(sup, args):
    _change_command(sup)
    sup.ctl('update', check=True, timeout=60)


def deploy(sup, args):
    _change_command(sup)
    fcgi_restart(sup, args)


SCENARIOS = [
    ('restart', 'supervisorctl restart app:*', restart),
    ('fcgi_restart', 'supervisorctl fcgi_restart app', fcgi_restart),
    ('stop/start', 'stop app:*, {pause:g} s, start app:*', stop_start),
    ('update', 'reread + update (command changed)', update),
    ('deploy', 'reread + fcgi_restart (command changed)', deploy),
]


def run_one(action, hold, args):
    spec = PoolSpec('app', WORKER, numprocs=args.numprocs, socket=args.socket,
                    extra={'stopwaitsecs': 10})
    with Supervisor([spec], plugin_options={'hold_sockets': hold}) as sup, \
            Nginx(spec.socket_url) as nginx:
        stream = RequestStream(nginx.port, rate=args.rate, clients=args.clients)
        with stream:
            if not stream.wait_requests(args.rate, 10):
                raise SystemExit('the request stream did not start')
            began = time.monotonic()
            action(sup, args)
            took = time.monotonic() - began
            sup.wait_running(30)
            time.sleep(1.0)       # let the waiting requests drain
        return stream.result, took


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--numprocs', type=int, default=4)
    parser.add_argument('--rate', type=int, default=300,
                        help='requests per second (default 300)')
    parser.add_argument('--clients', type=int, default=8,
                        help='concurrent client connections (default 8)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--pause', type=float, default=3.0)
    parser.add_argument('--socket', choices=('tcp', 'unix'), default='tcp')
    parser.add_argument('--only', choices=[name for name, _, _ in SCENARIOS],
                        help='run only this scenario')
    parser.add_argument('--hold', choices=('on', 'off', 'both'), default='both',
                        help="the plugin's hold_sockets (default both: a row each)")
    args = parser.parse_args(argv)
    holds = {'off': ['false'], 'on': ['true'], 'both': ['false', 'true']}[args.hold]
    print('%d reference workers, %s socket, %d requests/s from %d clients '
          'through nginx' % (args.numprocs, args.socket, args.rate, args.clients))
    row = '%-13s %-5s %-40s %8s %7s %9s %8s'
    print(row % ('scenario', 'hold', 'operation', 'requests', 'failed',
                 'max lat s', 'took s'))
    for name, text, action in SCENARIOS:
        if args.only and args.only != name:
            continue
        for hold in holds:
            result, took = run_one(action, hold, args)
            print(row % (name, 'on' if hold == 'true' else 'off',
                         text.format(pause=args.pause), result.requests,
                         result.failed, '%.3f' % result.max_latency,
                         '%.1f' % took))
            sys.stdout.flush()


if __name__ == '__main__':
    main()
