"""fcgi-worker: a FastCGI worker for supervisord's [fcgi-program:x], on flup.

usage: fcgi-worker [--threads N] [--max-requests N] [--max-requests-jitter J]
                   [--timeout SECONDS] [--python-scoreboard] [module:callable]
       python -m supervisor_fcgi_ext.worker ...   (the same)

Serves the WSGI app ``module:callable`` (``module`` alone means
``module:application``; the current directory is importable) on the listening
socket supervisord passes as fd 0, TCP or unix.  Without an app it serves a
demo that answers ``ProcessId: <pid>`` and sleeps ``?sleep=SECONDS`` first.

    [fcgi-program:app]
    socket = unix:///run/app.sock
    command = fcgi-worker myproject.wsgi:application --max-requests 1000
    numprocs = 6
    process_name = %(program_name)s_%(process_num)02d
    autorestart = true      ; --max-requests and SIGHUP exit 0 to be respawned

One request at a time by default: idle workers wait in a blocking accept(),
which the kernel serves first-in first-out, so a pool spreads its connections
evenly.  ``--threads N`` serves N connections at once (flup's thread pool);
only accepts while a thread is free.

Signals: TERM, INT and HUP finish the requests in flight, then exit 0 (also at
once when idle).  USR1 writes every thread's stack to stderr and goes on.
When supervisord's fcgi plugin runs, every request is counted in this worker's
scoreboard slot (docs/scoreboard.rst), written by the C writer where it is
built; else by the Python one on x86 only (elsewhere its stores have no
ordering: the scoreboard is off, and one line says so).

FCGI_WEB_SERVER_ADDRS (as in flup): the comma-separated addresses of the web
servers allowed to connect; TCP pools only.

--timeout bounds every wait for the web server on a connection: a request
that stops arriving, an answer nobody takes, and an idle kept-alive connection
(nginx's fastcgi_keep_conn), which holds a single-threaded worker until then.

Exit codes: 0 stopped by a signal or after --max-requests; 3 fd 0 is not a
listening socket (not started as an fcgi-program); 4 the app cannot be loaded.
A recycled worker exits 0, as a clean stop: supervisor's default
autorestart=unexpected would leave it down, so pools set autorestart=true
(then SIGHUP restarts one worker gracefully, too).  A dedicated exit code
would be restarted by default, but logged as "not expected" at every recycle
and counted as a crash by anything that watches exit codes.
"""
from __future__ import annotations

import argparse
import errno
import faulthandler
import importlib
import os
import random
import signal
import socket
import sys
import time
from urllib.parse import parse_qs

from supervisor_fcgi_ext.worker import log
from supervisor_fcgi_ext.worker.base import DEFAULT_TIMEOUT, EXIT_OK
from supervisor_fcgi_ext.worker.single import SingleWorker
from supervisor_fcgi_ext.worker.slotwriter import SlotWriter
from supervisor_fcgi_ext.worker.threaded import ThreadedWorker

__all__ = ['main', 'parse_args', 'demo_app', 'load_app', 'listening_socket', 'describe',
           'BootError', 'EXIT_OK', 'WORKER_BOOT_ERROR', 'APP_LOAD_ERROR']

WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4
MAX_DEMO_SLEEP = 60.0


class BootError(Exception):
    """fd 0 cannot be served: exit WORKER_BOOT_ERROR with this one line."""


# -- the app ------------------------------------------------------------------

def demo_app(environ, start_response):
    """?sleep=SECONDS sleeps (capped at MAX_DEMO_SLEEP), then answers the pid."""
    query = environ.get('QUERY_STRING')
    if query:
        values = parse_qs(query, keep_blank_values=True).get('sleep')
        if values:
            try:
                seconds = float(values[0])
                if not 0 <= seconds < float('inf'):
                    raise ValueError
            except ValueError:
                start_response('400 Bad Request', [('Content-Type', 'text/plain')])
                return [b'sleep must be a number of seconds >= 0\n']
            time.sleep(min(seconds, MAX_DEMO_SLEEP))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ProcessId: %d\n' % os.getpid()]


def load_app(spec):
    """The callable named by ``module:callable``; ValueError with one line if not."""
    module_name, _, attr = spec.partition(':')
    attr = attr or 'application'
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split('.'):
            obj = getattr(obj, part)
    except BaseException as exc:   # anything an import can raise, SystemExit too
        reason = str(exc).strip().splitlines()
        raise ValueError('cannot load app %r: %s%s' % (
            spec, type(exc).__name__, ': ' + reason[0] if reason else ''))
    if not callable(obj):
        raise ValueError('cannot load app %r: %r is not callable' % (spec, obj))
    return obj


# -- fd 0 ---------------------------------------------------------------------

def listening_socket(fd=0):
    """The listening stream socket on ``fd``, of its real family (flup assumes
    AF_INET); BootError when fd is anything else."""
    hint = ('fcgi-worker serves the listening socket on fd 0: run it as a '
            'supervisord [fcgi-program:x]')
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BootError('fd %d is not a socket (%s); %s'
                        % (fd, errno.errorcode.get(exc.errno, exc), hint))
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise BootError('fd %d is a socket but not a listening stream socket; %s'
                        % (fd, hint))
    return sock


def describe(sock):
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return 'unix:' + (name if isinstance(name, str) else repr(name))
    host, port = sock.getsockname()[:2]
    return 'tcp://%s:%d' % ('[%s]' % host if ':' in host else host, port)


# -- command line -----------------------------------------------------------------

# What the slot's fields and the socket calls can hold (threads is a 16-bit
# field; a timeout must be a finite number of seconds), so a bad value is a
# usage line, not a traceback from deep inside.
OPTION_RANGES = {'threads': (1, 1024), 'max_requests': (0, 2 ** 63 - 1),
                 'max_requests_jitter': (0, 2 ** 63 - 1), 'timeout': (0.001, 86400)}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='fcgi-worker', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[2:]))
    parser.add_argument('app', nargs='?', metavar='module:callable',
                        help='WSGI app to serve (default: the pid demo)')
    parser.add_argument('--threads', type=int, default=1, metavar='N',
                        help='connections served at once (default 1)')
    parser.add_argument('--max-requests', type=int, default=0, metavar='N',
                        help='exit 0 after N requests, to be respawned (default 0: never)')
    parser.add_argument('--max-requests-jitter', type=int, default=0, metavar='J',
                        help='add 0..J to --max-requests, so a pool does not '
                             'restart all at once')
    parser.add_argument('--python-scoreboard', action='store_true',
                        help="write the scoreboard in pure Python even where the "
                             "C writer is built (to compare, or to rule it out; "
                             "x86 only)")
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT, metavar='SECONDS',
                        help='longest wait for the peer on a connection (default %g)'
                             % DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    for name, (low, high) in OPTION_RANGES.items():
        if not low <= getattr(args, name) <= high:
            parser.error('--%s must be between %s and %s, not %s'
                         % (name.replace('_', '-'), low, high, getattr(args, name)))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        listener = listening_socket(0)
    except BootError as exc:
        log(str(exc))
        return WORKER_BOOT_ERROR
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    max_requests = args.max_requests
    if max_requests and args.max_requests_jitter:
        max_requests += random.randint(0, args.max_requests_jitter)
    board = SlotWriter.from_environ(threads=args.threads, max_requests=max_requests,
                                    use_c=not args.python_scoreboard)
    try:
        app = load_app(args.app) if args.app else demo_app
    except ValueError as exc:
        log(str(exc))
        return APP_LOAD_ERROR
    if args.threads > 1:
        server = ThreadedWorker(app, listener, args.threads, args.timeout,
                                max_requests, board)
    else:
        server = SingleWorker(app, listener, args.timeout, max_requests, board)
    log('serving %s on %s (%s%s%s%s)' % (
        args.app or 'the demo app', describe(listener),
        '%d threads' % args.threads if args.threads > 1 else 'single-threaded',
        ', max %d requests' % max_requests if max_requests else '',
        ', scoreboard %s (%s writer)' % (board.path, board.kind) if board else '',
        ', C fast path' if server.fast is not None else ''))
    return server.serve()
