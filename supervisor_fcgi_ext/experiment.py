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
import collections
import concurrent.futures
import http.client
import json
import math
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import asdict, dataclass

from supervisor_fcgi_ext import report, spread
from supervisor_fcgi_ext.harness import (HarnessError, Nginx, PoolSpec,
                                         Supervisor, find_nginx, free_port)

__all__ = ['Options', 'ExperimentError', 'parse_args', 'check_options',
           'run_experiment', 'parse_pid', 'plugin_delta', 'tally', 'summarize',
           'format_result', 'plot', 'main']

POOL = 'app'
MAX_SLEEP = 60.0          # the demo worker sleeps at most this long
SETTLE_EXACT = 5.0        # a scoreboard is written as the response goes out
SETTLE_SAMPLED = 3.0      # two sampling intervals (1 s) and some slack
SAMPLING_HINT = ('\n            (a sample about every second misses shorter '
                 'connections: try --sleep 2)')
PID_RE = re.compile(rb'ProcessId:\s*(\d+)')


class ExperimentError(Exception):
    """The experiment cannot run; the message is one line (plus detail)."""


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


# -- computing from plain data ---------------------------------------------

def parse_pid(body):
    """The pid a response body names (``ProcessId: N``), else None."""
    match = PID_RE.search(body or b'')
    return int(match.group(1)) if match else None


def plugin_delta(before, after):
    """Per-pid counts of one round from two fcgi.getPoolStatus answers.

    Counters only grow between resets, so a round is after minus before; a
    worker that exited during the round (``gone``) took its counts into the
    pool total, which gives the ``exited`` remainder.
    """
    old = {p['pid']: p for p in before['processes'] if p['pid']}
    processes = []
    for p in after['processes']:
        if not p['pid']:
            continue
        prior = old.pop(p['pid'], {'requests': 0, 'accepted_conn': 0})
        processes.append({
            'pid': p['pid'], 'name': p['name'], 'source': p['requests_source'],
            'requests': p['requests'] - prior['requests'],
            'accepted_conn': p['accepted_conn'] - prior['accepted_conn']})
    requests = after['requests'] - before['requests']
    return {'processes': processes, 'requests': requests,
            'accepted_conn': after['accepted_conn'] - before['accepted_conn'],
            'exited': requests - sum(p['requests'] for p in processes),
            'gone': [{'pid': p['pid'], 'name': p['name']} for p in old.values()]}


def tally(round_):
    """One round's rows (one per pid), failures and agreement."""
    answered = [r for r in round_['responses'] if not r['error']]
    failures = [r for r in round_['responses'] if r['error']]
    bodies = collections.Counter(r['pid'] for r in answered if r['pid'])
    plugin = {p['pid']: p for p in round_['plugin']['processes']}
    gone = {p['pid']: p['name'] for p in round_['plugin']['gone']}
    rows = []
    for pid in sorted(set(bodies) | set(plugin) | set(gone)):
        p = plugin.get(pid)
        rows.append({'pid': pid, 'name': p['name'] if p else gone.get(pid, '?'),
                     'bodies': bodies.get(pid, 0),
                     'plugin': p['requests'] if p else None,
                     'accepted_conn': p['accepted_conn'] if p else None,
                     'source': p['source'] if p else None,
                     'exited': p is None})
    return {'rows': rows, 'answered': len(answered), 'failures': failures,
            'pids_in_bodies': bool(bodies),
            'agreement': _agreement(rows, round_['plugin'], len(answered),
                                    len(failures), bool(bodies))}


def _agreement(rows, plugin, answered, failed, pids_in_bodies):
    """Whether the responses and the plugin counted the same requests per pid.

    A worker that dies holding a request has counted it (as PHP-FPM does, at
    its start) and the client got an error: such ``lost`` requests, at most
    one per failure, are the only difference allowed, on exited workers."""
    sources = {r['source'] for r in rows if r['source']}
    agreement = {'source': sources.pop() if len(sources) == 1 else 'mixed',
                 'mismatches': [], 'lost': 0,
                 'plugin_total': plugin['requests'], 'answered': answered}
    if not pids_in_bodies:
        return dict(agreement, status='no-pids')
    mismatches = [{'pid': r['pid'], 'bodies': r['bodies'], 'plugin': r['plugin']}
                  for r in rows if not r['exited'] and r['plugin'] != r['bodies']]
    gone = sum(r['bodies'] for r in rows if r['exited'])
    if 0 < plugin['exited'] - gone <= failed:
        agreement['lost'] = plugin['exited'] - gone
    elif plugin['exited'] != gone:
        mismatches.append({'pid': None, 'bodies': gone,
                           'plugin': plugin['exited']})
    return dict(agreement, mismatches=mismatches,
                status='differ' if mismatches else 'agree')


def _figures(counts):
    figures = spread.summarize(counts)
    figures['requests'] = sum(counts)
    figures['workers'] = len(counts)
    return figures


def summarize(rounds):
    """The result of an experiment from its rounds (plain data, see
    run_experiment); what main() prints and --json writes."""
    tallies = [tally(r) for r in rounds]
    by_bodies = all(t['pids_in_bodies'] for t in tallies)
    totals = collections.OrderedDict()
    splits = []
    for t in tallies:
        for row in t['rows']:
            total = totals.setdefault(row['pid'], {
                'pid': row['pid'], 'name': row['name'], 'bodies': 0,
                'plugin': 0, 'accepted_conn': 0, 'source': row['source'],
                'exited': False})
            total['bodies'] += row['bodies']
            total['plugin'] += row['plugin'] or 0
            total['accepted_conn'] += row['accepted_conn'] or 0
            total['exited'] = total['exited'] or row['exited']
        splits.append(_split(t['rows'], by_bodies))
    per_round = [_figures(s) for s in splits]
    rows = sorted(totals.values(), key=lambda r: (r['name'], r['pid']))
    overall = _split(rows, by_bodies)
    statuses = {t['agreement']['status'] for t in tallies}
    return {
        'rows': rows,
        'counted_from': 'bodies' if by_bodies else 'plugin',
        'rounds': [{'number': r['number'], 'seconds': r['seconds'],
                    'split': s, 'failures': len(t['failures']),
                    'agreement': t['agreement'], 'rows': t['rows']}
                   for r, t, s in zip(rounds, tallies, splits)],
        'requests': sum(len(r['responses']) for r in rounds),
        'answered': sum(t['answered'] for t in tallies),
        'accepted_conn': sum(r['plugin']['accepted_conn'] for r in rounds),
        'plugin_requests': sum(r['plugin']['requests'] for r in rounds),
        'failures': [dict(f, round=r['number'])
                     for r, t in zip(rounds, tallies) for f in t['failures']],
        'agreement': statuses.pop() if len(statuses) == 1 else 'differ',
        'lost': sum(t['agreement']['lost'] for t in tallies),
        'source': _combined({t['agreement']['source'] for t in tallies}),
        'per_round': per_round,
        'overall': _figures(overall),
        'latency': _latency([x for r in rounds for x in r['responses']]),
    }


def _split(rows, by_bodies):
    """Counts per pid of one round, largest first: zeros included, but not
    those of a worker that exited without answering (it is no longer in
    the pool)."""
    key = 'bodies' if by_bodies else 'plugin'
    return sorted((r[key] or 0 for r in rows
                   if not r['exited'] or (by_bodies and r['bodies'])),
                  reverse=True)


def _combined(sources):
    return sources.pop() if len(sources) == 1 else 'mixed'


def _latency(responses):
    seconds = sorted(r['seconds'] for r in responses if not r['error'])
    if not seconds:
        return {}
    return {'min': seconds[0], 'median': statistics.median(seconds),
            'max': seconds[-1]}


# -- the report ---------------------------------------------------------------

def format_result(result):
    """The report people read: table per pid, figures, fcgi_status."""
    opts = result['options']
    summary = result['summary']
    lines = [
        '%d x %s on %s, nginx on %s%s' % (
            opts['workers'], result['command'], result['socket'],
            result['nginx'], ' (fastcgi_keep_conn, keepalive %d)'
            % result['keepalive'] if result['keepalive'] else ''),
        '%d round%s of %d requests GET %s, %d at a time' % (
            opts['rounds'], 's' if opts['rounds'] > 1 else '', opts['requests'],
            result['path'], min(opts['concurrency'] or opts['requests'],
                                opts['requests'])),
        '']
    lines += _table(summary)
    lines.append('')
    lines += _figure_lines(summary, result['seconds'])
    lines += ['', report.format_pool(result['fcgi_status'])]
    return '\n'.join(lines)


def _table(summary):
    rows = summary['rows']
    sampled = summary['source'] != 'exact'
    largest = max([r['bodies' if summary['counted_from'] == 'bodies'
                     else 'plugin'] for r in rows] or [0])
    out = ['  %-9s %7s %9s %9s %8s  %s' % ('NAME', 'PID', 'RESPONSES', 'PLUGIN',
                                          'ACCEPTED', 'SHARE')]
    for r in rows:
        shown = r['bodies' if summary['counted_from'] == 'bodies' else 'plugin']
        mark = '~' if r['source'] == 'sampled' else ''
        out.append(('  %-9s %7d %9s %9s %8s  %s' % (
            r['name'], r['pid'],
            r['bodies'] if summary['counted_from'] == 'bodies' else '-',
            'exited' if r['exited'] else '%s%d' % (mark, r['plugin']),
            '-' if r['exited'] else r['accepted_conn'],
            report.share_bar(shown, largest))).rstrip())
    out.append('  %-9s %7s %9d %9s %8d' % (
        'total', '', sum(r['bodies'] for r in rows),
        '%s%d' % ('~' if sampled else '', summary['plugin_requests']),
        summary['accepted_conn']))
    if sampled:
        out.append('  ~ sampled by the plugin: connections seen held by a pid '
                   '(the worker writes no scoreboard)')
    if any(r['exited'] for r in rows):
        out.append('  exited: the worker is gone; the plugin keeps its counts '
                   'in the pool total only')
    return out


def _figure_lines(summary, seconds):
    out = ['agreement   ' + _agreement_text(summary)]
    overall, per_round = summary['overall'], summary['per_round']
    if len(per_round) > 1:
        fair = [f['fairness'] for f in per_round]
        bal = [f['balance'] for f in per_round]
        first = per_round[0]
        out += [
            'fairness    per round: mean %.3f  min %.3f  (best %.3f, random %.3f)'
            % (statistics.mean(fair), min(fair), first['best_fairness'],
               first['random_fairness']),
            '            all %d requests: %.3f  (best %.3f, random %.3f)'
            % (overall['requests'], overall['fairness'],
               overall['best_fairness'], overall['random_fairness']),
            'balance     per round: mean %.2f  max %.2f  (best %.2f, random %.2f)'
            % (statistics.mean(bal), max(bal), first['best_balance'],
               first['random_balance']),
            '            all %d requests: %.2f  (best %.2f, random %.2f)'
            % (overall['requests'], overall['balance'],
               overall['best_balance'], overall['random_balance']),
            'splits      ' + '; '.join(
                '%s x%d' % (','.join(map(str, split)), n) for split, n in
                collections.Counter(tuple(r['split'])
                                    for r in summary['rounds']).most_common()),
        ]
    else:
        out += [
            'fairness    %.3f  (best %.3f, random %.3f): %.1f of %d workers used'
            % (overall['fairness'], overall['best_fairness'],
               overall['random_fairness'], overall['effective_workers'],
               overall['workers']),
            'balance     %.2f  (best %.2f, random %.2f)'
            % (overall['balance'], overall['best_balance'],
               overall['random_balance']),
        ]
    out.append('connections %d accepted for %d requests' % (
        summary['accepted_conn'], summary['answered']))
    out.append('failures    ' + _failure_text(summary))
    latency = summary['latency']
    if latency:
        out.append('latency     %.2f / %.2f / %.2f s (min / median / max)'
                   % (latency['min'], latency['median'], latency['max']))
    out.append('wall time   %.2f s for the rounds, %.1f s in all' % (
        sum(r['seconds'] for r in summary['rounds']), seconds))
    return out


def _agreement_text(summary):
    status, source = summary['agreement'], summary['source']
    if status == 'no-pids':
        missed = summary['answered'] - summary['plugin_requests']
        return ('the bodies carry no pid: the distribution is what the plugin '
                'sampled (%d counted for %d answered requests)%s'
                % (summary['plugin_requests'], summary['answered'],
                   SAMPLING_HINT if missed > 0 else ''))
    if status == 'agree':
        lost = summary['lost']
        return ('%s: every pid answered as many requests as fcgi.getPoolStatus '
                'counted (%d)%s' % (source, summary['answered'],
                                   '; and %d taken by a worker that died '
                                   '(failed here)' % lost if lost else ''))
    worst = [m for r in summary['rounds'] for m in r['agreement']['mismatches']]
    shown = ', '.join('%s %d vs %d' % (
        'pid %d' % m['pid'] if m['pid'] else 'exited workers', m['bodies'],
        m['plugin']) for m in worst[:4])
    if source == 'exact':
        return ('DIFFER (responses vs plugin): %s%s'
                % (shown, ', ...' if len(worst) > 4 else ''))
    return ('%s, so not exact (responses vs plugin): %s%s%s'
            % (source, shown, ', ...' if len(worst) > 4 else '', SAMPLING_HINT))


def _failure_text(summary):
    failures = summary['failures']
    if not failures:
        return 'none'
    kinds = collections.Counter(f['error'] for f in failures)
    return '%d of %d: %s' % (len(failures), summary['requests'], '; '.join(
        '%s x%d (round %s)' % (error, n, ','.join(sorted(
            {str(f['round']) for f in failures if f['error'] == error})))
        for error, n in kinds.most_common()))


def plot(result, path):
    """A bar chart of requests per pid, one bar per round (PNG or SVG)."""
    plt = _pyplot()
    summary = result['summary']
    rows = summary['rows']
    key = summary['counted_from']
    rounds = summary['rounds']
    width = 0.8 / len(rounds)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(rows) + 3), 4.5))
    cmap = plt.get_cmap('viridis')
    for i, r in enumerate(rounds):
        counts = {row['pid']: row[key] or 0 for row in r['rows']}
        ax.bar([j - 0.4 + width * (i + 0.5) for j in range(len(rows))],
               [counts.get(row['pid'], 0) for row in rows], width,
               color=cmap(i / max(1, len(rounds) - 1)),
               label='round %d' % r['number'])
    even = summary['per_round'][0]['requests'] / max(1, len(rows))
    ax.axhline(even, color='grey', linestyle='--', linewidth=1,
               label='even share')
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(['%s\n%d' % (row['name'], row['pid']) for row in rows])
    ax.set_ylabel('requests per round (%s)' % (
        'from the responses' if key == 'bodies' else 'sampled by the plugin'))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title('%d requests x %d rounds over %d workers (%s): fairness %.3f '
                 'over all %d' % (result['options']['requests'], len(rounds),
                                  len(rows), result['options']['socket'],
                                  summary['overall']['fairness'],
                                  summary['overall']['requests']))
    if len(rounds) <= 10:
        ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ExperimentError("--plot needs matplotlib: "
                              "pip install 'supervisor-fcgi-ext[plot]'") from None
    return plt


# -- running it -----------------------------------------------------------------

def check_options(opts):
    """ExperimentError naming the first option that cannot work."""
    for name in ('workers', 'requests', 'rounds'):
        if getattr(opts, name) < 1:
            raise ExperimentError('--%s must be at least 1' % name)
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ExperimentError('--concurrency must be at least 1')
    if opts.threads is not None and opts.threads < 1:
        raise ExperimentError('--threads must be at least 1')
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
    if opts.plot:
        if not opts.plot.lower().endswith(('.png', '.svg')):
            raise ExperimentError('--plot FILE must end in .png or .svg')
        _pyplot()


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
            seconds, ','.join(map(str, _split(t['rows'], t['pids_in_bodies']))),
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
