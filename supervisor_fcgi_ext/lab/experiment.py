"""fcgi-experiment: how evenly does one shared FastCGI socket spread requests?

The classic demonstration, as one command: supervisord (with this plugin)
starts N FastCGI workers on one shared socket, nginx on a loopback port does
fastcgi_pass to it, and concurrent requests that each take a while go through
nginx.  Every response body says ``ProcessId: <pid>``: the ground truth of who
answered.  The report puts it next to what ``fcgi.getPoolStatus`` counted
(exact for workers that write the scoreboard, sampled at the socket for any
other program), with the fairness (Jain's index) and balance (max/mean) of the
spread beside the best possible and the uniform-random expectation.

Everything runs in a temp dir on free loopback ports and is stopped and
removed at the end (``--keep DIR`` keeps the configs and logs in DIR).
Progress goes to stderr, the report to stdout.  Exit status: 0 all requests
answered and, for cooperating workers, the counts agree exactly; 1 some
request failed or the counts differ; 2 the experiment could not run.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import asdict, dataclass

from supervisor_fcgi_ext.lab.distribution import (ExperimentError, pyplot, round_split,
                                                  format_result, parse_pid, plot,
                                                  plugin_delta, summarize, tally)
from supervisor_fcgi_ext.lab.harness import (HarnessError, Nginx, PoolSpec,
                                             Supervisor, find_nginx, free_port)

__all__ = ['Options', 'parse_args', 'check_options', 'run_experiment',
           'make_servers', 'fire', 'main']

POOL = 'app'
MAX_SLEEP = 60.0          # the demo worker sleeps at most this long
# Upper bounds, so a typo is a usage error, not minutes of waiting for a
# supervisord that cannot fork 10**11 workers or a client with 10**9 threads.
LIMITS = {'workers': 1000, 'requests': 1000000, 'rounds': 10000,
          'concurrency': 10000, 'threads': 1000}
SETTLE_EXACT = 5.0        # a scoreboard is written as the response goes out
SETTLE_SAMPLED = 3.0      # two sampling intervals (1 s) and some slack


@dataclass
class Options:
    workers: int = 6
    requests: int = 10
    concurrency: int | None = None     # None: all requests of a round at once
    sleep: float = 1.0
    rounds: int = 1
    socket: str = 'tcp'
    threads: int | None = None         # None: 1, or enough for --keepalive
    keepalive: bool = False
    worker_command: str | None = None
    path: str = '/app?sleep={sleep}'
    nginx: str | None = None
    keep: str | None = None
    json: bool = False
    plot: str | None = None

    @property
    def at_once(self):
        return min(self.concurrency or self.requests, self.requests)

    @property
    def worker_threads(self):
        """Threads per reference worker.  With --keepalive every connection
        nginx keeps idle pins a thread, so by default there are enough for
        all of them."""
        if self.threads:
            return self.threads
        if self.keepalive and not self.worker_command:
            return max(1, math.ceil(self.at_once / self.workers))
        return 1

    @property
    def command(self):
        if self.worker_command:
            return _absolute_command(self.worker_command)
        threads = self.worker_threads
        return 'fcgi-worker' + (' --threads %d' % threads if threads > 1 else '')

    @property
    def request_path(self):
        return self.path.replace('{sleep}', '%g' % self.sleep)


def _absolute_command(command):
    """supervisord runs programs from its own dir: ./worker must stay ours."""
    words = shlex.split(command)
    if words and '/' in words[0] and not os.path.isabs(words[0]):
        words[0] = os.path.abspath(words[0])
    return shlex.join(words)


# -- running it -----------------------------------------------------------------

def check_options(opts):
    """ExperimentError naming the first option that cannot work."""
    for name, most in LIMITS.items():
        value = getattr(opts, name)
        if value is not None and not 1 <= value <= most:
            raise ExperimentError('--%s must be from 1 to %d, not %d'
                                  % (name, most, value))
    if not 0 <= opts.sleep <= MAX_SLEEP:
        raise ExperimentError('--sleep must be seconds between 0 and %g'
                              % MAX_SLEEP)
    if opts.socket not in ('tcp', 'unix'):
        raise ExperimentError('--socket must be tcp or unix')
    if opts.worker_command is not None:
        if not opts.worker_command.strip():
            raise ExperimentError('--worker-command is empty')
        if opts.threads:
            raise ExperimentError('--threads is an option of fcgi-worker; '
                                  'give your worker its own in --worker-command')
    if not opts.path.startswith('/'):
        raise ExperimentError('--path must start with /')
    if any(c <= ' ' or c == '\x7f' for c in opts.path):
        raise ExperimentError('--path cannot hold spaces or control characters '
                              '(an HTTP request line cannot): write %%20 for a space')
    if opts.plot:
        if not opts.plot.lower().endswith(('.png', '.svg')):
            raise ExperimentError('--plot FILE must end in .png or .svg')
        pyplot()


def _progress_to(stream):
    def progress(text, end='\n'):
        stream.write(text + end)
        stream.flush()
    return progress


def run_experiment(opts, progress=None, during_round=None):
    """Start supervisord and nginx, run the rounds, stop everything; the
    result dict main() prints.  ``during_round(number, supervisor)`` is
    called while a round's requests are in flight (tests kill a worker
    there).  Raises ExperimentError or HarnessError when it cannot run."""
    check_options(opts)
    progress = progress or (lambda text, end='\n': None)
    nginx_path = find_nginx(opts.nginx)
    warning = _keepalive_warning(opts)
    if warning:
        progress('warning: ' + warning)
    started = time.monotonic()
    workdir = _workdir(opts.keep)
    sup = nginx = None
    try:
        sup, nginx = make_servers(opts, workdir, nginx_path)
        progress('starting supervisord (%d workers: %s) in %s...'
                 % (opts.workers, opts.command, workdir))
        sup.start(timeout=30)
        supervisord_pid = sup.pid
        progress('starting nginx on 127.0.0.1:%d...' % nginx.port)
        nginx.start()
        rounds = _run_rounds(opts, sup, nginx, progress, during_round)
        status = sup.rpc.fcgi.getPoolStatus(POOL)
    finally:
        progress('stopping nginx and supervisord...')
        try:
            for server in (nginx, sup):
                if server is not None:
                    server.stop()
        finally:
            if not opts.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    if opts.keep:
        progress('configs and logs kept in %s' % workdir)
    return {
        'options': asdict(opts),
        'command': opts.command,
        'socket': sup.pool(POOL).socket_url,
        'nginx': '127.0.0.1:%d' % nginx.port,
        'keepalive': nginx.keepalive or 0,
        'path': opts.request_path,
        'workdir': workdir,
        'supervisord_pid': supervisord_pid,
        'summary': summarize(rounds),
        'fcgi_status': status,
        'seconds': time.monotonic() - started,
    }


def _keepalive_warning(opts):
    slots = opts.workers * opts.worker_threads
    if opts.keepalive and slots < opts.at_once:
        return ('--keepalive with %d worker slots for %d concurrent requests: '
                'each connection nginx keeps idle pins a slot, so requests wait '
                'for a worker to drop one (its idle timeout)' % (slots, opts.at_once))
    return None


def _workdir(keep):
    if keep:
        try:
            os.makedirs(keep, exist_ok=True)
        except OSError as exc:
            raise ExperimentError('--keep %s: %s' % (keep, exc.strerror)) from None
        return os.path.abspath(keep)
    path = tempfile.mkdtemp(prefix='fcgi-experiment-')
    os.chmod(path, 0o755)     # nginx's workers (nobody) must get in
    return path


def make_servers(opts, workdir, nginx_path=None):
    """The (not yet started) Supervisor and Nginx of an experiment."""
    # startretries 0: a worker command that cannot start fails in a second.
    extra = {'startretries': 0}
    if opts.worker_command:
        extra['directory'] = os.getcwd()   # its relative arguments are ours
    spec = PoolSpec(POOL, command=opts.command, numprocs=opts.workers,
                    socket=opts.socket, extra=extra)
    sup = Supervisor([spec], workdir=workdir, keep=True)
    # nginx keeps at most as many idle connections as a round uses.
    nginx = Nginx(spec.resolve_socket(workdir), workdir=workdir,
                  keepalive=opts.at_once if opts.keepalive else False,
                  port=free_port(), nginx=nginx_path, keep=True)
    return sup, nginx


def _run_rounds(opts, sup, nginx, progress, during_round):
    sup.rpc.fcgi.resetStatistics(POOL)
    timeout = 30 + opts.sleep * math.ceil(
        opts.requests / (opts.workers * opts.worker_threads))
    rounds = []
    for number in range(1, opts.rounds + 1):
        sup.wait_running(timeout=30)    # a respawned worker first
        progress('round %d/%d: %d requests...' % (number, opts.rounds,
                                                 opts.requests), end='')
        before = sup.rpc.fcgi.getPoolStatus(POOL)
        start = time.monotonic()
        during = (lambda: during_round(number, sup)) if during_round else None
        responses = fire(nginx, opts, timeout, during)
        seconds = time.monotonic() - start
        after = _settle(sup, before, responses)
        round_ = {'number': number, 'seconds': seconds, 'responses': responses,
                  'plugin': plugin_delta(before, after)}
        rounds.append(round_)
        t = tally(round_)
        progress(' %.2f s, split %s%s' % (
            seconds, ','.join(map(str, round_split(t['rows'], t['pids_in_bodies']))),
            ', %d FAILED' % len(t['failures']) if t['failures'] else ''))
    return rounds


def fire(nginx, opts, timeout, during=None):
    """opts.requests GETs through nginx, opts.at_once at a time; one record
    per request, in order: pid, status, error ('' when answered), seconds."""
    pool = concurrent.futures.ThreadPoolExecutor(opts.at_once)
    try:
        futures = [pool.submit(_get, nginx.port, opts.request_path, timeout)
                   for _ in range(opts.requests)]
        if during:
            during()
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _get(port, path, timeout):
    start = time.monotonic()
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('GET', path)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        error = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) or error == 'timed out':
            error = 'no answer within %gs' % timeout
        return {'pid': None, 'status': 0, 'error': error,
                'seconds': time.monotonic() - start}
    finally:
        conn.close()
    error = '' if 200 <= response.status < 300 else '%d %s' % (
        response.status, response.reason)
    return {'pid': parse_pid(body), 'status': response.status, 'error': error,
            'seconds': time.monotonic() - start}


def _settle(sup, before, responses):
    """The pool status once the plugin has counted the round's answered
    requests, or after a bounded wait (a sample can miss a connection)."""
    answered = sum(1 for r in responses if not r['error'])
    sampled = any(p['requests_source'] != 'exact'
                  for p in before['processes'] if p['pid'])
    deadline = time.monotonic() + (SETTLE_SAMPLED if sampled else SETTLE_EXACT)
    while True:
        status = sup.rpc.fcgi.getPoolStatus(POOL)
        if (status['requests'] - before['requests'] >= answered
                or time.monotonic() >= deadline):
            return status
        time.sleep(0.1)


# -- the command line -------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='fcgi-experiment', description=__doc__.split('\n\n')[0],
        epilog='Defaults reproduce the original: 6 reference workers on a TCP '
               'socket, nginx in front, 10 concurrent requests of 1 s each.')
    d = Options()
    add = parser.add_argument
    add('--workers', type=int, default=d.workers, help='processes in the pool (%(default)s)')
    add('--requests', type=int, default=d.requests, help='requests per round (%(default)s)')
    add('--concurrency', type=int, help='requests in flight at once (all of a round)')
    add('--sleep', type=float, default=d.sleep, help='seconds each request takes (%(default)s)')
    add('--rounds', type=int, default=d.rounds, help='rounds of requests (%(default)s)')
    add('--socket', choices=('tcp', 'unix'), default=d.socket, help='pool socket (%(default)s)')
    add('--threads', type=int,
        help='threads per fcgi-worker (1; with --keepalive enough for every kept connection)')
    add('--keepalive', action='store_true',
        help='nginx keeps FastCGI connections open (fastcgi_keep_conn on, upstream keepalive)')
    add('--worker-command', metavar='CMD',
        help='any FastCGI program instead of fcgi-worker; counted by socket sampling')
    add('--path', default=d.path,
        help='request path; {sleep} becomes --sleep (%(default)s)')
    add('--nginx', metavar='PATH', help='the nginx binary (PATH, /usr/sbin/nginx)')
    add('--keep', metavar='DIR', help='write configs and logs to DIR and keep them')
    add('--json', action='store_true', help='print the result as JSON')
    add('--plot', metavar='FILE', help='bar chart of requests per pid per round (.png, .svg)')
    args = parser.parse_args(argv)
    opts = Options(**vars(args))
    try:
        check_options(opts)
    except ExperimentError as exc:
        parser.error(str(exc))
    return opts


def main(argv=None):
    opts = parse_args(argv)
    progress = _progress_to(sys.stderr)
    try:
        result = run_experiment(opts, progress)
        if opts.plot:
            plot(result, opts.plot)
            progress('plot written to %s' % opts.plot)
    except (ExperimentError, HarnessError) as exc:
        _error(str(exc))
        return 2
    except (OSError, xmlrpc.client.Error) as exc:
        _error('%s: %s' % (type(exc).__name__, exc))
        return 2
    except KeyboardInterrupt:
        _error('interrupted; everything started was stopped')
        return 130
    if opts.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_result(result))
    summary = result['summary']
    differ = summary['agreement'] == 'differ' and summary['source'] == 'exact'
    return 1 if summary['failures'] or differ else 0


def _error(text):
    """The reason on one line; for a worker that did not start, the last
    line it wrote to stderr too (harness errors carry log tails)."""
    lines = text.splitlines() or ['unknown']
    out = 'fcgi-experiment: error: ' + lines[0]
    if ' is FATAL: ' in lines[0]:
        stderr = []
        for line in lines[1:]:
            if line.startswith('--- '):
                break
            if line.strip():
                stderr.append(line.strip())
        if stderr:
            out += '\n  worker stderr: ' + stderr[-1]
    sys.stderr.write(out + '\n')


if __name__ == '__main__':
    sys.exit(main())
