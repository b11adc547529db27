"""A real Prometheus scrapes two real supervisords with the shipped
sample_confs/prometheus (only addresses, the password file and the
intervals moved): the fleet's request total through its query API is exact,
the alerting rules load and evaluate, and every Grafana panel's query is
accepted.  In CI (CI=true) a missing prometheus fails, never skips."""
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from supervisor_fcgi_ext.lab.harness import (PoolSpec, Supervisor, free_port,
                                             kill_session, wait_for)

from conftest import in_ci
from scrapes import PASSWORD, USER, AuthSupervisor, basic, through_nginx, wait_counted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(ROOT, 'sample_confs')
PROMETHEUS_DIR = os.path.join(SAMPLES, 'prometheus')
DASHBOARD = os.path.join(SAMPLES, 'grafana', 'fcgi-pools.json')
# What Grafana puts in for its own variables before it sends a query.
GRAFANA_VARIABLES = {'$__rate_interval': '1m', '$instance': '.*', '$pool': '.*'}


def tool(name):
    path = shutil.which(name)
    if path is None:
        message = '%s not found: apt-get install prometheus' % name
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool(*args):
    return subprocess.run([tool('promtool')] + list(args), capture_output=True,
                          text=True, timeout=60, cwd=PROMETHEUS_DIR)


def test_promtool_accepts_the_sample_config_and_rules():
    for args in (('check', 'config', 'prometheus.yml'),
                 ('check', 'rules', 'fcgi-alerts.yml')):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    assert 'SUCCESS: 6 rules found' in result.stdout


def dashboard_queries():
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    for panel in dashboard['panels']:
        assert panel['datasource'] == {'type': 'prometheus', 'uid': '${datasource}'}
        for target in panel['targets']:
            yield panel['title'], target['expr']


def grafana_to_promql(expr):
    for variable, text in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, text)
    assert '$' not in expr, expr
    return expr


def test_the_dashboard_is_importable_json_with_a_datasource_variable():
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    variables = {v['name']: v for v in dashboard['templating']['list']}
    assert variables['datasource']['type'] == 'datasource'
    assert variables['datasource']['query'] == 'prometheus'
    assert len({p['id'] for p in dashboard['panels']}) == len(dashboard['panels'])
    titles = ' '.join(title for title, _ in dashboard_queries())
    for wanted in ('Utilisation', 'queue', 'drops', 'per pool', 'per process',
                   'p50 / p99', 'Fairness', 'Respawns'):
        assert wanted in titles


class Prometheus:
    """prometheus on a free loopback port, temp storage, its own session."""

    def __init__(self, workdir, config_text):
        self.workdir = workdir
        self.port = free_port()
        self.config = os.path.join(workdir, 'prometheus.yml')
        with open(self.config, 'w') as f:
            f.write(config_text)
        shutil.copy(os.path.join(PROMETHEUS_DIR, 'fcgi-alerts.yml'), workdir)
        self.log = open(os.path.join(workdir, 'prometheus.log'), 'w')
        self.proc = subprocess.Popen(
            [tool('prometheus'), '--config.file=' + self.config,
             '--storage.tsdb.path=' + os.path.join(workdir, 'data'),
             '--web.listen-address=127.0.0.1:%d' % self.port],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ready, 60, 'prometheus ready on port %d' % self.port, 0.2)

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError('prometheus exited %d: %s' % (
                self.proc.returncode, open(self.log.name).read()[-2000:]))
        try:
            with urllib.request.urlopen('http://127.0.0.1:%d/-/ready' % self.port,
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = 'http://127.0.0.1:%d/api/v1/%s?%s' % (self.port, path,
                                                    urllib.parse.urlencode(params))
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:   # a refused query says why in JSON
            return json.load(e)

    def query(self, expr):
        answer = self.api('query', query=expr)
        assert answer['status'] == 'success', (expr, answer)
        return answer['data']['result']

    def stop(self):
        kill_session(self.proc.pid)
        self.proc.wait(10)
        self.log.close()


def fleet_config(inet_port, listen_port, password_file):
    """The sample, pointed at the two supervisords, scraping every second."""
    with open(os.path.join(PROMETHEUS_DIR, 'prometheus.yml')) as f:
        text = f.read()
    for old, new in (("'web1.example.com:9001', 'web2.example.com:9001'",
                      "'127.0.0.1:%d'" % inet_port),
                     ("'worker1.example.com:9253'", "'127.0.0.1:%d'" % listen_port),
                     ('username: prometheus', 'username: %s' % USER),
                     ('/etc/prometheus/supervisord.password', password_file),
                     ('scrape_interval: 15s', 'scrape_interval: 1s'),
                     ('evaluation_interval: 15s', 'evaluation_interval: 1s')):
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_prometheus_counts_the_fleets_requests_exactly(tmp_path, nginx_factory):
    tool('prometheus')
    listen_port = free_port()
    password_file = str(tmp_path / 'supervisord.password')
    with open(password_file, 'w') as f:
        f.write(PASSWORD)
    # web1: a supervisord with a password on [inet_http_server]; worker1: one
    # scraped on metrics_listen (its own HTTP servers are not asked)
    with AuthSupervisor([PoolSpec(numprocs=2)]) as web1, \
            Supervisor([PoolSpec(numprocs=3, socket='unix')], unix_http_server=True,
                       plugin_options={'metrics_listen':
                                       '127.0.0.1:%d' % listen_port}) as worker1:
        web1_nginx = nginx_factory(web1.pool('app').socket_url)
        through_nginx(web1_nginx, 7)
        through_nginx(nginx_factory(worker1.pool('app').socket_url), 5)
        wait_counted(web1.url, 7, headers=basic(USER, PASSWORD))
        wait_counted('http://127.0.0.1:%d' % listen_port, 5)
        prometheus = Prometheus(str(tmp_path),
                                fleet_config(web1.port, listen_port, password_file))
        try:
            wait_until_sum(prometheus, 'fcgi_pool_requests_total', 12)
            ups = prometheus.query('up')
            assert sorted((u['metric']['job'], u['value'][1]) for u in ups) == [
                ('supervisord', '1'), ('supervisord-metrics-listen', '1')]
            per_host = {r['metric']['job']: float(r['value'][1])
                        for r in prometheus.query(
                            'sum by (job) (fcgi_process_requests_total)')}
            assert per_host == {'supervisord': 7, 'supervisord-metrics-listen': 5}
            rules_evaluate(prometheus)
            # requests while Prometheus scrapes: rate() of the histogram has data
            through_nginx(web1_nginx, 5)
            wait_until_sum(prometheus, 'fcgi_pool_requests_total', 17)
            wait_until_sum(prometheus, 'fcgi_request_duration_seconds_count', 17)
            panels_have_data(prometheus)
        finally:
            prometheus.stop()


def rules_evaluate(prometheus):
    def evaluated():
        groups = prometheus.api('rules')['data']['groups']
        rules = [r for g in groups for r in g['rules']]
        done = not any(r['lastEvaluation'].startswith('0001-') for r in rules)
        return rules if done and len(rules) == 6 else None
    rules = wait_for(evaluated, 30, 'the sample alerting rules evaluated', 0.5)
    assert {r['health'] for r in rules} == {'ok'}, rules
    firing = {r['name'] for r in rules if r['state'] != 'inactive'}
    assert 'FcgiScrapeDown' not in firing and 'FcgiSocketClosed' not in firing


def wait_until_sum(prometheus, metric, total):
    """The fleet's sum of ``metric`` through the query API, exactly ``total``."""
    def check():
        result = prometheus.query('sum(%s)' % metric)
        return result and float(result[0]['value'][1]) == total
    wait_for(check, 30, 'sum(%s) == %d' % (metric, total), 0.5)


def numbers(result):
    """The values of a query's result that are numbers (histogram_quantile
    without a finished request in its window is NaN)."""
    return [float(r['value'][1]) for r in result if r['value'][1] not in ('NaN', '+Inf')]


def panels_have_data(prometheus):
    """Every panel's query returns a number for web1's pool, which served
    requests within the last minute (rate() needs two scrapes in its
    window); the latency: a few ms, from the histogram."""
    for title, expr in dashboard_queries():
        query = grafana_to_promql(expr)
        wait_for(lambda: numbers(prometheus.query(query)), 15, 'data for %r' % title, 0.5)
        if 'Latency' in title:
            assert 0 < max(numbers(prometheus.query(query))) < 0.25, query
