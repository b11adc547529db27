"""What a run says (distribution.py): tallies, agreement, fairness and the
plot, computed from plain rounds like the ones fcgi-experiment records."""
import pytest

from supervisor_fcgi_ext.lab import distribution
from supervisor_fcgi_ext.common import spread
from supervisor_fcgi_ext.lab.distribution import plugin_delta, summarize, tally
from supervisor_fcgi_ext.lab.experiment import Options

def answered(pid, seconds=1.0):
    return {'pid': pid, 'status': 200, 'error': '', 'seconds': seconds}


FAILED = {'pid': None, 'status': 502, 'error': '502 Bad Gateway', 'seconds': 1.0}


def pool(counts, exited=0, source='exact'):
    """A getPoolStatus answer with {pid: requests} (and exited workers' counts)."""
    processes = [{'pid': pid, 'name': 'app_%02d' % i, 'requests': n,
                  'accepted_conn': n, 'requests_source': source}
                 for i, (pid, n) in enumerate(sorted(counts.items()))]
    total = sum(counts.values()) + exited
    return {'processes': processes, 'requests': total, 'accepted_conn': total}


def make_round(number, responses, before, after):
    return {'number': number, 'seconds': 2.0, 'responses': responses,
            'plugin': plugin_delta(before, after)}


# -- plain data -------------------------------------------------------------

@pytest.mark.parametrize('body, pid', [
    (b'ProcessId: 4242\n', 4242),
    (b'Hello from Go\nProcessId: 77\n', 77),          # the seed's worker
    (b'{"pid": 12, "path": "/sleep"}', None),         # a body without one
    (b'', None),
])
def test_parse_pid(body, pid):
    assert distribution.parse_pid(body) == pid


def test_plugin_delta_is_after_minus_before_with_exited_remainder():
    before = pool({1: 3, 2: 1})
    # pid 2 served one more and exited; pid 3 is its replacement
    after = pool({1: 5, 3: 1}, exited=1 + 1)
    delta = plugin_delta(before, after)
    assert [(p['pid'], p['requests']) for p in delta['processes']] == [(1, 2), (3, 1)]
    assert delta['requests'] == 4 and delta['exited'] == 1
    assert delta['gone'] == [{'pid': 2, 'name': 'app_01'}]


def test_tally_agrees_per_pid_and_keeps_idle_workers():
    t = tally(make_round(1, [answered(1), answered(1), answered(2)],
                         pool({1: 0, 2: 0, 3: 0}), pool({1: 2, 2: 1, 3: 0})))
    assert [(r['pid'], r['bodies'], r['plugin']) for r in t['rows']] == [
        (1, 2, 2), (2, 1, 1), (3, 0, 0)]
    assert t['agreement']['status'] == 'agree'
    assert t['agreement']['source'] == 'exact'


def test_tally_names_each_pid_that_differs():
    t = tally(make_round(1, [answered(1), answered(1), answered(2)],
                         pool({1: 0, 2: 0}), pool({1: 1, 2: 2})))
    assert t['agreement']['status'] == 'differ'
    assert t['agreement']['mismatches'] == [
        {'pid': 1, 'bodies': 2, 'plugin': 1}, {'pid': 2, 'bodies': 1, 'plugin': 2}]


@pytest.mark.parametrize('responses, status, lost', [
    ([answered(1), FAILED], 'agree', 1),          # taken, then the worker died
    ([answered(1), answered(1)], 'differ', 0),    # no failure explains it
])
def test_a_request_lost_with_a_killed_worker_is_only_allowed_as_a_failure(
        responses, status, lost):
    before = pool({1: 0, 2: 0})
    after = pool({1: 1, 3: 0}, exited=1)    # pid 2 counted one and was killed
    t = tally(make_round(1, responses, before, after))
    assert t['agreement']['status'] == status
    assert t['agreement']['lost'] == lost
    gone = [r for r in t['rows'] if r['pid'] == 2][0]
    assert gone['exited'] and gone['name'] == 'app_01' and gone['plugin'] is None


def test_without_pids_in_the_bodies_the_plugin_counts_are_the_distribution():
    body_less = dict(answered(None))
    rounds = [make_round(1, [body_less] * 3, pool({1: 0, 2: 0}, source='sampled'),
                         pool({1: 2, 2: 1}, source='sampled'))]
    summary = summarize(rounds)
    assert summary['counted_from'] == 'plugin'
    assert summary['agreement'] == 'no-pids' and summary['source'] == 'sampled'
    assert summary['rounds'][0]['split'] == [2, 1]
    assert summary['plugin_requests'] == summary['answered'] == 3


def test_sources_combine_as_the_pool_status_does():
    """A round whose workers count differently, and rounds that differ, are
    'mixed' (scoreboard.combined_source, the pool total's rule)."""
    exact = pool({1: 0}), pool({1: 1})
    sampled = pool({2: 0}, source='sampled'), pool({2: 1}, source='sampled')
    both = make_round(1, [answered(1), answered(2)],
                      {**exact[0], 'processes': exact[0]['processes'] + sampled[0]['processes']},
                      {**exact[1], 'requests': 2,
                       'processes': exact[1]['processes'] + sampled[1]['processes']})
    assert tally(both)['agreement']['source'] == 'mixed'
    rounds = [make_round(1, [answered(1)], *exact), make_round(2, [answered(2)], *sampled)]
    assert [r['agreement']['source'] for r in summarize(rounds)['rounds']] == [
        'exact', 'sampled']
    assert summarize(rounds)['source'] == 'mixed'


def test_summarize_rounds_totals_splits_figures_and_failures():
    first = make_round(1, [answered(1), answered(1), answered(2), FAILED],
                       pool({1: 0, 2: 0}), pool({1: 2, 2: 1}))
    second = make_round(2, [answered(2), answered(2), answered(1)],
                        pool({1: 2, 2: 1}), pool({1: 3, 2: 3}))
    summary = summarize([first, second])
    assert [(r['pid'], r['bodies'], r['plugin']) for r in summary['rows']] == [
        (1, 3, 3), (2, 3, 3)]
    assert [r['split'] for r in summary['rounds']] == [[2, 1], [2, 1]]
    assert summary['agreement'] == 'agree'
    assert summary['requests'] == 7 and summary['answered'] == 6
    assert summary['failures'] == [dict(FAILED, round=1)]
    assert summary['overall']['fairness'] == 1.0
    per_round = summary['per_round'][0]
    assert per_round['fairness'] == spread.jain_index([2, 1])
    assert per_round['best_fairness'] == spread.jain_index(spread.best_split(3, 2))
    assert per_round['best_balance'] == spread.balance([2, 1])



@pytest.mark.parametrize('suffix, magic', [('png', b'\x89PNG'), ('svg', b'<?xml')])
def test_plot_writes_a_bar_chart(tmp_path, suffix, magic):
    pytest.importorskip('matplotlib')
    rounds = [make_round(n, [answered(1), answered(2), answered(2)],
                         pool({1: 0, 2: 0}), pool({1: 1, 2: 2})) for n in (1, 2)]
    result = {'options': vars(Options()), 'summary': summarize(rounds)}
    path = tmp_path / ('chart.' + suffix)
    distribution.plot(result, str(path))
    assert path.read_bytes().startswith(magic)

