"""What a run's responses and the plugin's counts say: tallies, agreement,
fairness, the report text and the plot.

Plain functions of plain data (the rounds fcgi-experiment records and the
fcgi.getPoolStatus answers around them); experiment.py runs the servers and
the requests and calls these.
"""
import collections
import re
import statistics

from supervisor_fcgi_ext.ctl import report
from supervisor_fcgi_ext.common import spread
from supervisor_fcgi_ext.common.scoreboard import combined_source

__all__ = ['ExperimentError', 'parse_pid', 'plugin_delta', 'tally', 'summarize',
           'format_result', 'plot', 'pyplot', 'round_split']

SAMPLING_HINT = ('\n            (a sample about every second misses shorter '
                 'connections: try --sleep 2)')
PID_RE = re.compile(rb'ProcessId:\s*(\d+)')


# Here, not in experiment.py, because plot() raises it too: experiment.py
# imports it, so there is one class even under `python -m ...experiment`.
class ExperimentError(Exception):
    """The experiment cannot run; the message is one line (plus detail)."""


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
    agreement = {'source': combined_source(r['source'] for r in rows
                                           if r['source']),
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
        splits.append(round_split(t['rows'], by_bodies))
    per_round = [_figures(s) for s in splits]
    rows = sorted(totals.values(), key=lambda r: (r['name'], r['pid']))
    overall = round_split(rows, by_bodies)
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
        'source': combined_source(t['agreement']['source'] for t in tallies),
        'per_round': per_round,
        'overall': _figures(overall),
        'latency': _latency([x for r in rounds for x in r['responses']]),
    }


def round_split(rows, by_bodies):
    """Counts per pid of one round, largest first: zeros included, but not
    those of a worker that exited without answering (it is no longer in
    the pool)."""
    key = 'bodies' if by_bodies else 'plugin'
    return sorted((r[key] or 0 for r in rows
                   if not r['exited'] or (by_bodies and r['bodies'])),
                  reverse=True)


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
    plt = pyplot()
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


def pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ExperimentError("--plot needs matplotlib: "
                              "pip install 'supervisor-fcgi-ext[plot]'") from None
    return plt
