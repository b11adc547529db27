"""fcgi-worker against what users would pick instead (uWSGI, PHP-FPM, a C
libfcgi responder, bare flup, Go, gunicorn), side by side, through one nginx.

    python benchmarks/bench_worker.py [--workers 6] [--rounds 5] [--seconds 3]
                                      [--warmup 0.5] [--concurrency 12]
                                      [--socket unix|tcp] [--client auto|python|wrk]
                                      [--only all|rivals|fcgi-worker] [--no-install]

(``--rounds 1 --seconds 0.2 --warmup 0.1 --workers 1`` runs every variant
once; ``--only fcgi-worker`` just fcgi-worker's three, in a few seconds;
``--only rivals`` fcgi-worker + scoreboard against uWSGI, PHP-FPM and C.)

The rivals: uWSGI 2 (its C core, the same WSGI app, through uwsgi_pass on
its own socket; pip-installed into this venv when missing, unless
--no-install), PHP-FPM (php-fpm8.2 or php-fpm on PATH or in /usr/sbin,
static pm with --workers children on its own socket, php_hello.php; it is
not installed by this script: apt-get install php8.2-fpm), and a C libfcgi
responder on the shared socket (libfcgi_hello.c, built in a temp dir when
cc and fcgiapp.h are there: apt-get install libfcgi-dev), the FastCGI
ceiling.  A rival that cannot run is skipped with the reason.  The report
ends with fcgi-worker's ratio to each (goals: >= 1.0 to uWSGI and PHP-FPM,
>= 0.95 to C).  The client is wrk (-t2) when on PATH and --seconds is a
whole number, else the Python loop below; both keep their connections alive.

Like supervisord's fcgi-program, this script binds one listening socket and
starts --workers processes of a variant with it as fd 0 (gunicorn: one
arbiter with --workers, bound to fd://0); a temporary nginx (harness.Nginx,
no upstream keep-alive, like the seed experiment) passes every request to it,
by fastcgi_pass (gunicorn: proxy_pass).  The client is a small keep-alive
HTTP/1.1 load loop in this process, the same for every variant.  Variants
take turns within each round, so drift hits all of them alike; the report is
the median req/s per variant, its ratio to the first variant (bare flup
threaded), fcgi-worker's (C scoreboard) to bare flup single's, and the
pool's CPU time per request.  Every variant serves the
demo app's answer (supervisor_fcgi_ext.worker.cli.demo_app; Go:
go_fcgi_hello.go), which does next to nothing: the numbers are the servers'
own cost.  Go's variant is built when ``go`` is on PATH, gunicorn's runs
when it is importable; the report names those it skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from rivals import (C_FCGI, GOALS, OURS, PHP, UWSGI, BenchNginx, Variant, c_variant,
                    php_variant, uwsgi_variant, wrk_load)
from supervisor_fcgi_ext.common.fastcgi import CODEC
from supervisor_fcgi_ext.lab.fcgiclient import parse_address
from supervisor_fcgi_ext.lab.harness import find_nginx
from supervisor_fcgi_ext.common.scoreboard import ENV_VAR
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir, harvest_slot
from supervisor_fcgi_ext.worker.cli import demo_app
from supervisor_fcgi_ext.worker.slotwriter import CSlotWriter

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))
FLUP = ("from flup.server.{mod} import WSGIServer; "
        "from supervisor_fcgi_ext.worker.cli import demo_app; WSGIServer(demo_app).run()")


def sized_demo_app(environ, start_response):
    """demo_app with the Content-Length that fcgi-worker adds to a list
    response, so that nginx need not chunk gunicorn's answer either."""
    answer = []
    body = b''.join(demo_app(environ, lambda status, headers: answer.extend((status, headers))))
    start_response(answer[0], answer[1] + [('Content-Length', str(len(body)))])
    return [body]


def go_variant(tmp):
    go = shutil.which('go')
    if go is None:
        return 'no go on PATH (Debian: golang-go)'
    binary = os.path.join(tmp, 'go_fcgi_hello')
    env = dict(os.environ, GOCACHE=os.path.join(tmp, 'gocache'),
               GOPATH=os.path.join(tmp, 'gopath'))
    subprocess.run([go, 'build', '-o', binary, os.path.join(HERE, 'go_fcgi_hello.go')],
                   check=True, env=env)
    return Variant([binary])


def gunicorn_variant(workers):
    if importlib.util.find_spec('gunicorn') is None:
        return 'not installed (pip install gunicorn)'
    return Variant([sys.executable, '-m', 'gunicorn', '--bind', 'fd://0', '--worker-class',
                    'sync', '--graceful-timeout', '5', '--log-level', 'warning', '--chdir',
                    HERE, '--workers', str(workers), 'bench_worker:sized_demo_app'],
                   graceful=True, arbiter=True, passing='http')


def variants(tmp, args):
    """{name: Variant} in running order, and {name: why skipped}, for the
    names that --only selects (none is built or installed for the others)."""
    worker = os.path.join(BIN, 'fcgi-worker')
    makers = {
        'flup threaded': lambda: Variant([sys.executable, '-c', FLUP.format(mod='fcgi')]),
        'flup single': lambda: Variant([sys.executable, '-c',
                                        FLUP.format(mod='fcgi_single')]),
        'Go net/http/fcgi': lambda: go_variant(tmp),
        'gunicorn sync (proxy_pass)': lambda: gunicorn_variant(args.workers),
        UWSGI: lambda: uwsgi_variant(tmp, args.socket, args.workers, args.install),
        PHP: lambda: php_variant(tmp, args.socket, args.workers),
        C_FCGI: lambda: c_variant(tmp),
        OURS: lambda: Variant([worker], graceful=True, scoreboard=True),
        'fcgi-worker + Python writer': lambda: Variant([worker, '--python-scoreboard'],
                                                       graceful=True, scoreboard=True),
        'fcgi-worker, no scoreboard': lambda: Variant([worker], graceful=True),
    }
    wanted = {'all': lambda name: True, 'rivals': lambda name: name in (OURS, *GOALS),
              'fcgi-worker': lambda name: name.startswith('fcgi-worker')}[args.only]
    found, skipped = {}, {}
    for name, make in makers.items():
        if wanted(name):
            made = make()
            if isinstance(made, Variant):
                found[name] = made
            else:
                skipped[name] = made
    return found, skipped


SHM = '/dev/shm'
REQUEST = b'GET / HTTP/1.1\r\nHost: bench\r\n\r\n'


def load(port, concurrency, seconds):
    """Requests completed in ``seconds`` by ``concurrency`` keep-alive connections."""
    sel = selectors.DefaultSelector()

    def connect():
        sock = socket.create_connection(('127.0.0.1', port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sock.send(REQUEST)
        sel.register(sock, selectors.EVENT_READ, bytearray())

    for _ in range(concurrency):
        connect()
    done = errors = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                buf = key.data
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionResetError:
                    data = b''
                if not data:
                    # nginx's keepalive_requests reached: it closes after a
                    # response, resetting if our next request was in flight
                    if buf:
                        raise RuntimeError('nginx closed a connection mid-response')
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    connect()
                    continue
                buf += data
                end = buf.find(b'\r\n\r\n')
                if end < 0:
                    continue
                head = bytes(buf[:end]).lower()
                length = int(head.split(b'content-length:')[1].split(b'\r\n')[0])
                if len(buf) < end + 4 + length:
                    continue
                if not head.startswith(b'http/1.1 200'):
                    errors += 1
                del buf[:end + 4 + length]
                done += 1
                key.fileobj.send(REQUEST)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    if errors:
        raise RuntimeError('%d responses were not 200 (port %d)' % (errors, port))
    return done


def bind_pool_socket(kind, tmp):
    """The pool's listening socket, as supervisord makes one, and its URL."""
    if kind == 'unix':
        path = os.path.join(tmp, 'pool.sock')
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o777)
        url = 'unix://' + path
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(('127.0.0.1', 0))
        url = 'tcp://127.0.0.1:%d' % listener.getsockname()[1]
    listener.listen(1024)
    return listener, url


def start_pool(variant, listener, workers, env):
    """The variant's processes: ``workers`` of them, or its one arbiter;
    fd 0 is the pool's socket unless it binds its own."""
    stdin = subprocess.DEVNULL if variant.address else listener.fileno()
    return [subprocess.Popen(variant.argv, stdin=stdin, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for _ in range(1 if variant.arbiter else workers)]


def pool_cpu(procs):
    """CPU seconds (user + system) the pool's processes (and their
    children: gunicorn's workers) have used so far."""
    total = 0.0
    for proc in procs:
        top = psutil.Process(proc.pid)
        for each in [top] + top.children(recursive=True):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def stop_pool(procs, graceful):
    """Stop the pool: fcgi-worker by TERM, so no slot is left mid-update
    (bare flup can ignore TERM in accept(): killed)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_listening(address, procs, timeout=30.0):
    """Until a rival's own socket takes connections (nginx would answer 502)."""
    family, sockaddr = parse_address(address)
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(sockaddr)
                return
            except OSError:
                pass
        if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
            raise RuntimeError('%s never listened on %s' % (procs[0].args[0], address))
        time.sleep(0.05)


def measure(variant, name, port, listener, args, env):
    """One round of one variant: (answers in the warm-up and in the
    measurement, req/s, µs of the pool's CPU per request, its pids)."""
    procs = start_pool(variant, listener, args.workers, env)
    try:
        if variant.address:
            wait_listening(variant.address, procs)
        warm = load(port, args.concurrency, args.warmup)
        cpu0 = pool_cpu(procs)
        if args.client == 'wrk':
            count, seconds = wrk_load(port, args.concurrency, int(args.seconds))
        else:
            count, seconds = load(port, args.concurrency, args.seconds), args.seconds
        if not count:
            raise RuntimeError('%s answered nothing in %gs: does %s run?'
                               % (name, args.seconds, variant.argv[0]))
        cpu = (pool_cpu(procs) - cpu0) / count * 1e6
    finally:
        stop_pool(procs, variant.graceful)
    return warm, count, count / seconds, cpu, [proc.pid for proc in procs]


def report(found, results, cpu_us, args, counted, answered):
    names = list(results)
    median = {name: statistics.median(rates) for name, rates in results.items()}
    print('\n%-28s %10s %8s %16s' % ('variant', 'median/s', 'ratio', 'µs CPU/request'))
    print('(ratio: to %s)' % names[0])
    for name in names:
        print('%-28s %10.0f %8.2f %16.1f' % (name, median[name], median[name] / median[names[0]],
                                             statistics.median(cpu_us[name])))
    if OURS in median:
        for rival, goal in dict(GOALS, **{'flup single': None}).items():
            if rival in median:
                ratio = median[OURS] / median[rival]
                print('%s / %s: %.2f%s' % (OURS, rival, ratio, '' if goal is None else
                                           ' (goal >= %.2f: %s)' % (
                                               goal, 'met' if ratio >= goal else 'NOT met')))
    off = 'fcgi-worker, no scoreboard'
    scoreboard_names = [name for name in names if found[name].scoreboard]
    for on in scoreboard_names if off in median else ():
        print('overhead of %s: %.1f%% req/s, %.1f%% worker CPU per request' % (
            on[len('fcgi-worker + '):], 100.0 * (1 - median[on] / median[off]),
            100.0 * (statistics.median(cpu_us[on]) / statistics.median(cpu_us[off]) - 1)))
    # each round runs two loads (warm-up, measure); a load stops waiting for
    # the requests still in flight when its time is up, and the workers serve
    # them anyway, or the next variant's on the pool socket do (the listener
    # outlives a pool): a scoreboard pool may count those of its own loads
    # and of the pool-socket variant before it
    shared = [name for name in names if not found[name].address]
    feeding = [name for i, name in enumerate(shared)
               if name in scoreboard_names or shared[(i + 1) % len(shared)] in scoreboard_names]
    loads = 2 * args.rounds * len(feeding)
    print('scoreboard counted %d requests, the client got %d answers (+ up to %d '
          'left in flight by the %d loads)' % (counted, answered,
                                               args.concurrency * loads, loads))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workers', type=int, default=6)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--seconds', type=float, default=3.0, help='measured, per variant')
    parser.add_argument('--warmup', type=float, default=0.5,
                        help='load before measuring, so every worker has started')
    parser.add_argument('--concurrency', type=int, default=12)
    parser.add_argument('--socket', choices=('unix', 'tcp'), default='unix')
    parser.add_argument('--client', choices=('auto', 'python', 'wrk'), default='auto',
                        help='auto: wrk when on PATH and --seconds is whole')
    parser.add_argument('--only', choices=('all', 'rivals', 'fcgi-worker'), default='all',
                        help='rivals: fcgi-worker + scoreboard, uWSGI, PHP-FPM and C; '
                             'fcgi-worker: its three writers')
    parser.add_argument('--no-install', dest='install', action='store_false',
                        help='skip uWSGI when missing instead of pip-installing it')
    args = parser.parse_args(argv)
    if args.client == 'auto':
        args.client = ('wrk' if shutil.which('wrk') and args.seconds >= 1
                       and args.seconds == int(args.seconds) else 'python')
    find_nginx()
    tmp = tempfile.mkdtemp(prefix='sfe-bench-')
    board = None
    counted = answered = 0
    try:
        os.chmod(tmp, 0o755)    # nginx's (and PHP-FPM's) workers run as nobody
        found, skipped = variants(tmp, args)
        names = list(found)
        results = {name: [] for name in names}
        cpu_us = {name: [] for name in names}
        listener, upstream = bind_pool_socket(args.socket, tmp)
        # On tmpfs, like the plugin's default scoreboard directory: slots on a
        # disk filesystem pay for writeback of the dirty page.
        board = tempfile.mkdtemp(prefix='sfe-bench-', dir=SHM if os.path.isdir(SHM) else None)
        ensure_pool_dir(board, 'bench')
        base_env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        board_env = dict(base_env, SUPERVISOR_GROUP_NAME='bench', **{ENV_VAR: board})
        nginx = BenchNginx(upstream, {v.passing: v.address or upstream for v in found.values()
                                      if v.passing != 'fastcgi'},
                           os.path.join(tmp, 'php_hello.php'),
                           workdir=os.path.join(tmp, 'nginx'))
        try:
            nginx.start()
            print('%d workers per variant, %s socket, %d client connections (%s), '
                  '%d rounds of %gs' % (args.workers, args.socket, args.concurrency,
                                        args.client, args.rounds, args.seconds))
            print("fcgi-worker's scoreboard writer: %s; its FastCGI codec: %s" % (
                'C (supervisor_fcgi_ext.worker._slotwriter)' if CSlotWriter else
                'Python: the C writer is not built (no compiler or Python.h?)', CODEC))
            for name, why in skipped.items():
                print('skipped %s: %s' % (name, why))
            for rnd in range(args.rounds):
                for name in names:
                    variant = found[name]
                    warm, count, rate, cpu, pids = measure(
                        variant, name, nginx.ports[variant.passing], listener, args,
                        board_env if variant.scoreboard else base_env)
                    if args.socket == 'unix' and not os.path.exists(listener.getsockname()):
                        # gunicorn unlinks a unix socket's path at exit
                        listener.close()
                        listener, _ = bind_pool_socket(args.socket, tmp)
                    if variant.scoreboard:
                        answered += warm + count
                        counted += sum(harvest_slot(board, 'bench', pid).requests
                                       for pid in pids)
                    results[name].append(rate)
                    cpu_us[name].append(cpu)
                    print('  round %d  %-28s %8.0f req/s %6.1f µs CPU/request'
                          % (rnd + 1, name, rate, cpu), flush=True)
        finally:
            nginx.stop()
            listener.close()
        report(found, results, cpu_us, args, counted, answered)
    finally:
        shutil.rmtree(tmp, True)
        if board:
            shutil.rmtree(board, True)


if __name__ == '__main__':
    main()
