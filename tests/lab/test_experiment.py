"""fcgi-experiment: its options, then end to end with real supervisord, real
nginx and real workers (the same code main() runs).  What the numbers say is
tested on plain data in test_distribution.py."""
import json
import os
import signal
import subprocess
import sys

import pytest

from supervisor_fcgi_ext.lab import experiment
from supervisor_fcgi_ext.lab.distribution import format_result
from supervisor_fcgi_ext.lab.experiment import Options, parse_args, run_experiment
from supervisor_fcgi_ext.lab.harness import BIN_DIR, session_processes, wait_for
from supervisor_fcgi_ext.lab.processes import alive, all_pids, cmdline, cwd


# -- the options ------------------------------------------------------------------

@pytest.mark.parametrize('argv, message', [
    (['--workers', '0'], '--workers must be from 1 to 1000, not 0'),
    (['--workers', '99999999999'], '--workers must be from 1 to 1000, not 99999999999'),
    (['--requests', '²'], "argument --requests: invalid int value: '²'"),
    (['--rounds', '10001'], '--rounds must be from 1 to 10000, not 10001'),
    (['--concurrency', '0'], '--concurrency must be from 1 to 10000, not 0'),
    (['--threads', '100000'], '--threads must be from 1 to 1000, not 100000'),
    (['--sleep', 'nan'], '--sleep must be seconds between 0 and 60'),
    (['--path', '/a b'], '--path cannot hold spaces or control characters'),
    (['--sleep', '61'], '--sleep must be seconds between 0 and 60'),
    (['--worker-command', 'w', '--threads', '2'], '--threads is an option of fcgi-worker'),
    (['--path', 'app'], '--path must start with /'),
    (['--plot', 'out.pdf'], '--plot FILE must end in .png or .svg'),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    with pytest.raises(SystemExit):
        parse_args(['--plot', 'out.png'])
    assert "pip install 'supervisor-fcgi-ext[plot]'" in capsys.readouterr().err


def test_keepalive_gives_each_kept_connection_a_worker_thread():
    assert parse_args(['--keepalive']).command == 'fcgi-worker --threads 2'
    assert parse_args([]).command == 'fcgi-worker'
    assert experiment._keepalive_warning(parse_args(['--keepalive'])) is None
    warning = experiment._keepalive_warning(
        parse_args(['--keepalive', '--threads', '1']))
    assert '6 worker slots for 10 concurrent requests' in warning


def test_a_relative_worker_command_stays_relative_to_the_user(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts = parse_args(['--worker-command', './goworker -listen fd0'])
    assert opts.command == '%s/goworker -listen fd0' % tmp_path


# -- end to end -----------------------------------------------------------------

SMALL = ['--workers', '3', '--requests', '6', '--sleep', '0.3', '--rounds', '2']


def leftovers(workdir):
    """Processes still running in or from the experiment's directory."""
    return [pid for pid in all_pids() if alive(pid) and (
        cwd(pid).startswith(workdir) or workdir in ' '.join(cmdline(pid)))]


def assert_nothing_left(result):
    assert session_processes(result['supervisord_pid']) == []
    assert leftovers(result['workdir']) == []
    assert not os.path.exists(result['workdir'])
    assert not os.path.exists('/dev/shm/supervisor-fcgi-%d' % result['supervisord_pid'])


def test_default_run_as_a_user_runs_it(requires_nginx):
    """The original: 6 workers, 10 concurrent 1 s requests, through nginx."""
    run = subprocess.run([os.path.join(BIN_DIR, 'fcgi-experiment')],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out, err = run.stdout, run.stderr
    assert 'starting supervisord (6 workers: fcgi-worker)' in err
    assert 'round 1/1: 10 requests... ' in err
    assert '6 x fcgi-worker on tcp://127.0.0.1:' in out
    assert 'agreement   exact: every pid answered as many requests as ' \
           'fcgi.getPoolStatus counted (10)' in out
    assert 'fairness    0.' in out and '(best 0.926, random 0.687)' in out
    assert 'failures    none' in out
    assert '\npool app  tcp://127.0.0.1:' in out      # the fcgi_status text
    total = [l for l in out.splitlines() if l.startswith('  total ')][0]
    assert total.split() == ['total', '10', '10', '10']
    workdir = err.split(' in ', 1)[1].split('...', 1)[0]
    assert not os.path.exists(workdir) and leftovers(workdir) == []


@pytest.mark.parametrize('kind', ['tcp', 'unix', 'keepalive'])
def test_counts_agree_exactly(kind, requires_nginx, capsys):
    argv = SMALL + ['--json'] + {'tcp': [], 'unix': ['--socket', 'unix'],
                                 'keepalive': ['--keepalive']}[kind]
    assert experiment.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    summary = result['summary']
    assert summary['agreement'] == 'agree' and summary['source'] == 'exact'
    assert summary['answered'] == 12 and summary['failures'] == []
    for r in summary['rounds']:
        assert sum(r['split']) == 6
        assert all(row['bodies'] == row['plugin'] for row in r['rows'])
    assert result['socket'].startswith('unix://' if kind == 'unix' else 'tcp://')
    if kind == 'keepalive':
        # nginx reused its connections in round 2
        assert result['keepalive'] == 6 and summary['accepted_conn'] <= 6
    else:
        assert summary['accepted_conn'] == 12
    assert result['fcgi_status']['requests'] == 12
    assert_nothing_left(result)


def test_a_worker_killed_mid_round_is_respawned_and_serves(requires_nginx):
    killed = {}

    def kill_a_busy_worker(number, sup):
        if number != 1:
            return
        def busy():
            status = sup.rpc.fcgi.getPoolStatus('app')
            return [p for p in status['processes'] if p['worker_state'] == 'running']
        victim = wait_for(busy, 5, 'a busy worker')[0]
        killed.update(pid=victim['pid'], name=victim['name'],
                      held=victim['connections'])
        os.kill(victim['pid'], signal.SIGKILL)

    result = run_experiment(Options(workers=3, requests=6, sleep=1, rounds=2),
                            during_round=kill_a_busy_worker)
    first, second = result['summary']['rounds']
    assert 1 <= first['failures'] <= killed['held']
    assert second['failures'] == 0 and sum(second['split']) == 6
    assert killed['pid'] not in {row['pid'] for row in second['rows']}
    # supervisor's replacement answers through nginx: it took the same socket
    replacement = [row for row in second['rows'] if row['name'] == killed['name']]
    assert len(replacement) == 1 and replacement[0]['bodies'] > 0
    assert result['summary']['agreement'] == 'agree'
    text = format_result(result)
    assert 'failures    %d of 12: 502 Bad Gateway' % first['failures'] in text
    assert 'exited' in text
    assert_nothing_left(result)


def test_a_non_cooperating_worker_is_counted_by_sampling(requires_nginx,
                                                         flupapp_command):
    # 2 s requests: a sample about every second catches each connection
    result = run_experiment(Options(workers=3, requests=3, sleep=2, rounds=2,
                                    worker_command=flupapp_command,
                                    path='/sleep?s={sleep}'))
    summary = result['summary']
    assert summary['counted_from'] == 'plugin'
    assert summary['agreement'] == 'no-pids' and summary['source'] == 'sampled'
    assert summary['answered'] == 6 and summary['failures'] == []
    assert sum(row['plugin'] for row in summary['rows']) == 6
    assert [sum(r['split']) for r in summary['rounds']] == [3, 3]
    text = format_result(result)
    assert 'the bodies carry no pid' in text and '~ sampled by the plugin' in text
    assert_nothing_left(result)


def test_a_worker_command_that_does_not_start_is_one_clear_error(requires_nginx,
                                                                 capsys):
    command = '%s -c "import sys; sys.exit(\'no app here\')"' % sys.executable
    assert experiment.main(['--workers', '1', '--worker-command', command]) == 2
    err = capsys.readouterr().err
    assert 'fcgi-experiment: error: app:app_00 is FATAL: Exited too quickly' in err
    assert '  worker stderr: no app here' in err
    workdir = err.split(' in ', 1)[1].split('...', 1)[0]
    assert not os.path.exists(workdir) and leftovers(workdir) == []


def test_missing_nginx_says_how_to_install_before_starting_anything(capsys):
    assert experiment.main(['--nginx', '/nonexistent/nginx']) == 2
    err = capsys.readouterr().err
    assert err.startswith('fcgi-experiment: error: nginx not found')
    assert 'apt-get install nginx-light' in err and 'starting' not in err


def test_keep_dir_that_cannot_be_made_is_one_line(tmp_path, requires_nginx, capsys):
    (tmp_path / 'file').write_text('')
    assert experiment.main(['--keep', str(tmp_path / 'file' / 'dir')]) == 2
    assert capsys.readouterr().err == (
        'fcgi-experiment: error: --keep %s: Not a directory\n'
        % (tmp_path / 'file' / 'dir'))


def test_module_help_lists_the_options():
    run = subprocess.run([sys.executable, '-m', 'supervisor_fcgi_ext.lab.experiment',
                          '--help'], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    for option in ('--workers', '--keepalive', '--worker-command', '--plot', '--keep'):
        assert option in run.stdout
