"""Every script in benchmarks/ runs once with tiny options, so none rots:
exit status 0 and its table printed, each run bounded well under a minute.
The figures themselves are not checked here (they depend on the machine)."""
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, 'benchmarks')
TIMEOUT = 45

NUMBER = r'[0-9]+(\.[0-9]+)?'
DEPLOY_SCENARIOS = ('restart', 'fcgi_restart', 'stop/start', 'update', 'deploy')

# script: [(tiny options, table header, a row of it as a regex, needs nginx)]
RUNS = {
    'bench_deploy.py': [
        (['--numprocs', '2', '--rate', '40', '--clients', '2', '--pause', '0.2',
          '--hold', 'on', '--only', name],
         'scenario      hold  operation',
         r'%s\s+on\s+.+\s+%s\s+%s\s+%s\s+%s$' % (re.escape(name), NUMBER, NUMBER,
                                                NUMBER, NUMBER),
         True)
        for name in DEPLOY_SCENARIOS],
    'bench_status.py': [
        (['--runs', '2', '--workers', '8'],
         '  workers  counts    conns     status',
         r'  8\s+exact\s+[0-9]+\s+%sms' % NUMBER, False)],
    'bench_sockstats.py': [
        (['--runs', '2', '--conns', '8', '--extra-fds', '1'],
         'sock  workers  conns',
         r'unix\s+256\s+8\s+[0-9]+(\s+%s){3}$' % NUMBER, False)],
    'bench_worker.py': [
        (['--only', 'fcgi-worker', '--workers', '1', '--rounds', '1',
          '--seconds', '0.3', '--warmup', '0.1', '--concurrency', '1'],
         'variant                        median/s    ratio',
         r'fcgi-worker, no scoreboard\s+[0-9]+\s+%s\s+%s$' % (NUMBER, NUMBER), True)],
}

# ids: the script, and bench_deploy's scenario (its last option)
CASES = [pytest.param(script, *run, id=script[:-3] + (
             '-' + run[0][-1].replace('/', '_') if len(runs) > 1 else ''))
         for script, runs in RUNS.items() for run in runs]


def test_every_benchmark_script_has_a_tiny_run():
    scripts = sorted(os.path.basename(p)
                     for p in glob.glob(os.path.join(BENCHMARKS, '*.py')))
    assert scripts == sorted(RUNS)


@pytest.mark.parametrize('script, options, header, row, needs_nginx', CASES)
def test_benchmark_runs_and_prints_its_table(request, script, options, header, row,
                                             needs_nginx):
    if needs_nginx:
        request.getfixturevalue('requires_nginx')
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script)] + options,
                            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [l for l in lines if l.startswith(header)], result.stdout
    assert [l for l in lines if re.match(row, l)], result.stdout
    assert 'Traceback' not in result.stderr, result.stderr
