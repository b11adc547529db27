"""sample_confs/ work as shipped: only paths and ports move into a temp dir."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab import distribution
from supervisor_fcgi_ext.lab import experiment
from supervisor_fcgi_ext.lab.harness import (FASTCGI_PARAMS, BIN_DIR, free_port,
                                             resolve_command, stop_session, wait_for)

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       'sample_confs')


def relocate(text, root, ports):
    """The sample's absolute paths and ports, moved under root."""
    text = text.replace('/var/log/supervisor', root + '/log')
    text = text.replace('/var/log/nginx', root + '/log')
    text = text.replace('/run/', root + '/run/')
    for old, new in ports.items():
        text = text.replace('127.0.0.1:%d' % old, '127.0.0.1:%d' % new)
    return text.replace('command = fcgi-worker', 'command = %s'
                        % resolve_command('fcgi-worker'))


@pytest.fixture
def sessions():
    procs = []
    yield procs
    for proc in procs:
        stop_session(proc.pid)
        proc.wait(10)


@pytest.fixture
def root():
    """A temp dir nginx's workers (www-data) can traverse, unlike tmp_path."""
    path = tempfile.mkdtemp(prefix='sfe-samples-')
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_sample_supervisord_and_nginx_confs_serve_both_pools(root, sessions,
                                                             requires_nginx):
    tmp_path, root = root, str(root)
    for sub in ('log', 'run'):
        os.makedirs(os.path.join(root, sub), mode=0o755)
    ports = {9000: free_port(), 8080: free_port()}
    sup_conf = tmp_path / 'supervisord.conf'
    sup_conf.write_text(relocate(open(os.path.join(SAMPLES, 'supervisord.conf')).read(),
                                 root, ports))
    nginx_conf = tmp_path / 'nginx.conf'
    nginx_conf.write_text(relocate(open(os.path.join(SAMPLES, 'nginx.conf')).read(),
                                   root, ports))
    (tmp_path / 'fastcgi_params').write_text(FASTCGI_PARAMS + '\n')

    sessions.append(subprocess.Popen(
        [sys.executable, '-m', 'supervisor.supervisord', '-n', '-c', str(sup_conf)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True))

    def ctl(*args):
        return subprocess.run([sys.executable, '-m', 'supervisor.supervisorctl',
                               '-c', str(sup_conf)] + list(args),
                              capture_output=True, text=True, timeout=30)

    def all_running():
        result = ctl('fcgi_status', '--json')
        if result.returncode != 0:
            return False
        pools = json.loads(result.stdout)
        return [p['name'] for p in pools] == ['app', 'app_unix'] and all(
            p['total_processes'] == 6 and p['socket_open'] for p in pools)
    wait_for(all_running, 30, 'both sample pools RUNNING')

    sessions.append(subprocess.Popen(
        [requires_nginx, '-p', root, '-e', root + '/log/error.log', '-c',
         str(nginx_conf), '-g', 'daemon off;'],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True))
    base = 'http://127.0.0.1:%d' % ports[8080]

    def answers():
        try:
            return urllib.request.urlopen(base + '/app', timeout=5).status == 200
        except OSError:
            return False
    wait_for(answers, 15, 'nginx serving /app')
    for path in ('/app?sleep=0', '/unix?sleep=0'):
        body = urllib.request.urlopen(base + path, timeout=5).read()
        assert body.startswith(b'ProcessId: '), (path, body)
    pools = json.loads(ctl('fcgi_status', '--json').stdout)
    assert [p['requests'] >= 1 for p in pools] == [True, True]
    assert ctl('shutdown').returncode == 0


# -- sample_confs/experiment-*: what fcgi-experiment writes ------------------

EXPERIMENT_SAMPLES = {'tcp': [], 'unix': ['--socket', 'unix'],
                      'keepalive': ['--keepalive']}
SAMPLE_WORKDIR = '/tmp/fcgi-experiment'


def config_lines(text):
    """The lines that configure: no comments, no blank lines."""
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith((';', '#'))]


@pytest.mark.parametrize('kind', sorted(EXPERIMENT_SAMPLES))
def test_experiment_sample_is_what_the_experiment_writes_and_serves(
        kind, root, sessions, requires_nginx):
    """Same lines as make_servers() writes; then run as shipped, with paths
    and ports moved, and the responses agree with fcgi.getPoolStatus."""
    opts = experiment.parse_args(EXPERIMENT_SAMPLES[kind])
    sup, nginx = experiment.make_servers(opts, str(root), requires_nginx)
    written = {'supervisord.conf': sup.config_text(), 'nginx.conf': nginx.conf_text}
    moves = [(SAMPLE_WORKDIR, str(root)),
             ('127.0.0.1:9001', '127.0.0.1:%d' % sup.port),
             ('127.0.0.1:8080', '127.0.0.1:%d' % nginx.port),
             ('command = fcgi-worker', 'command = %s/fcgi-worker' % BIN_DIR)]
    url = sup.pool('app').socket_url
    if url.startswith('tcp://'):
        moves.append(('127.0.0.1:9000', url[len('tcp://'):]))
    for name, text in written.items():
        sample = open(os.path.join(SAMPLES, 'experiment-' + kind, name)).read()
        for old, new in moves:
            sample = sample.replace(old, new)
        assert config_lines(sample) == config_lines(text), name
        (root / name).write_text(sample)

    sessions.append(subprocess.Popen(
        [sys.executable, '-m', 'supervisor.supervisord', '-c',
         str(root / 'supervisord.conf')], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    rpc = xmlrpc.client.ServerProxy(sup.url + '/RPC2')

    def pool_running():
        try:
            return rpc.fcgi.getPoolStatus('app')['total_processes'] == 6
        except (OSError, xmlrpc.client.Error):
            return False
    wait_for(pool_running, 30, 'the sample pool RUNNING')
    sessions.append(subprocess.Popen(
        [requires_nginx, '-p', str(root), '-e', str(root / 'error.log'), '-c',
         str(root / 'nginx.conf')], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    wait_for(lambda: experiment.fire(nginx, experiment.Options(requests=1, sleep=0),
                                     5)[0]['status'] == 200, 15, 'nginx serving')

    burst = experiment.Options(requests=6, sleep=0.3)
    before = rpc.fcgi.getPoolStatus('app')
    responses = (experiment.fire(nginx, burst, 10)
                 + experiment.fire(nginx, burst, 10))
    wait_for(lambda: rpc.fcgi.getPoolStatus('app')['requests']
             >= before['requests'] + 12, 5, 'the plugin counting 12 requests')
    after = rpc.fcgi.getPoolStatus('app')
    tally = distribution.tally({'number': 1, 'seconds': 0, 'responses': responses,
                              'plugin': distribution.plugin_delta(before, after)})
    assert tally['answered'] == 12 and tally['failures'] == []
    assert tally['agreement']['status'] == 'agree'
    accepted = after['accepted_conn'] - before['accepted_conn']
    assert accepted < 12 if kind == 'keepalive' else accepted == 12
    sessions[0].terminate()          # supervisord removes its scoreboard
    sessions[0].wait(20)
