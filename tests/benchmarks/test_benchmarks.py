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
PM_PARTS = {
    'first': r'first request, ondemand pool, no worker\s+[0-9]+ ms$',
    'burst': r'burst: 60 x 1 s requests answered in\s+%s s, [0-9]+ failed$' % NUMBER,
    'idle': r'idle memory, ondemand pool: workers \+ supervisord\s+',
}

# script: [(tiny options, regexes: each matches a line of its table)]; a row
# is 'some numbers', so a benchmark may add columns without breaking this
RUNS = {
    'bench_deploy.py': [
        (['--numprocs', '2', '--rate', '40', '--clients', '2', '--pause', '0.2',
          '--hold', 'on', '--only', name],
         [r'scenario\s+hold\s+operation\s+requests\s+failed',
          r'%s\s+on\s+.+(\s+%s)+$' % (re.escape(name), NUMBER)])
        for name in DEPLOY_SCENARIOS],
    'bench_status.py': [
        (['--runs', '2', '--workers', '8'],
         [r'  workers\s+counts\s+case\s+conns\s+status']
         + [r'  8\s+%s\s+%s\s+[0-9]+\s+%sms' % (counts, case, NUMBER) for counts, case
            in (('sampled', 'busy'), ('exact', 'busy'), ('exact', 'idle'),
                ('exact', 'changed'))])],
    'bench_roundtrip.py': [
        (['--workers', '4', '--runs', '1'],
         [r'  sock\s+method\s+bytes\s+passes\s+cpu ms',
          r'  unix\s+getPoolStatus(\s+%s)+$' % NUMBER,
          r'  inet\s+getAllProcessInfo(\s+%s)+$' % NUMBER,
          r'supervisorctl fcgi_status .* ms$'])],
    'bench_sockstats.py': [
        (['--runs', '2', '--conns', '8', '--extra-fds', '1'],
         [r'sock\s+workers\s+conns', r'unix\s+256\s+8(\s+%s)+$' % NUMBER])],
    'bench_worker.py': [
        (['--only', 'fcgi-worker', '--workers', '1', '--rounds', '1',
          '--seconds', '0.3', '--warmup', '0.1', '--concurrency', '1'],
         [r'variant\s+median/s\s+ratio',
          r'fcgi-worker, no scoreboard(\s+%s)+$' % NUMBER])],
    'bench_metrics.py': [
        (['--runs', '2', '--workers', '8'],
         [r'  workers\s+counts\s+status', r'  8\s+exact(\s+%sms)+$' % NUMBER])],
    'bench_views.py': [
        (['--runs', '2', '--workers', '8', '--calls', '2', '--live-workers', '2'],
         [r'  workers\s+status\s+xml-rpc\s+page\s+json',
          r'  8(\s+%s)+$' % NUMBER, r'  2(\s+%s \(\s*%s\))+$' % (NUMBER, NUMBER)])],
    'bench_pm.py': [
        (['--rounds', '1', '--idle-seconds', '0.5', '--numprocs', '4', '--only', part],
         [pattern])
        for part, pattern in PM_PARTS.items()],
    'bench_supervisord.py': [
        (['--seconds', '1', '--workers', '2', '--rate', '50', '--load-workers', '1',
          '--settle', '0.5'],
         [r'case\s+req/s\s+without\s+with\s+added', r'idle\s+-(\s+%s%%)+' % NUMBER,
          r'loaded\s+[0-9]+(\s+%s%%)+' % NUMBER])],
    'profile_worker.py': [
        (['--requests', '3', '--parts', 'whole'], [r'(whole\s+[0-9]+$|skipped: no valgrind)'])],
}

# these start nginx: skipped locally without it, failed in CI (requires_nginx)
NEEDS_NGINX = {'bench_deploy.py', 'bench_worker.py', 'bench_pm.py', 'bench_supervisord.py'}

# ids: the script, and the part run when there are several (the last option)
SCRIPTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCHMARKS, '*.py')))
CASES = [pytest.param(script, *run, id=script[:-3] + (
             '-' + run[0][-1].replace('/', '_') if len(runs) > 1 else ''))
         for script, runs in RUNS.items() if script in SCRIPTS for run in runs]


def test_every_benchmark_script_has_a_tiny_run():
    assert [script for script in SCRIPTS if script not in RUNS] == []


@pytest.mark.parametrize('script, options, patterns', CASES)
def test_benchmark_runs_and_prints_its_table(request, script, options, patterns):
    if script in NEEDS_NGINX:
        request.getfixturevalue('requires_nginx')
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script)] + options,
                            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for pattern in patterns:
        assert [l for l in lines if re.match(pattern, l)], (pattern, result.stdout)
    assert 'Traceback' not in result.stderr, result.stderr
