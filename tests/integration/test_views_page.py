"""/fcgi/status in a real headless chromium against a real supervisord whose
fcgi-worker pool runs a request while the browser looks."""
import base64
import json
import urllib.error
import urllib.request

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor

from conftest import in_ci
from viewsdom import DOM, Chromium, DevTools, Traffic, find_chromium, long_request, png_size

URI = '/report?id=42&sleep=30'
FIGURES = ('name', 'socket', 'requests', 'accepted_conn', 'requests_source',
           'total_processes', 'active_processes', 'idle_processes', 'listen_queue',
           'listen_queue_len', 'max_listen_queue', 'fairness', 'balance',
           'slow_requests', 'terminated_requests')
VOLATILE = ('elapsed',)     # grows between two looks
CREDENTIALS = ('watcher', 'p4ss w0rd')


@pytest.fixture
def chromium(tmp_path):
    binary = find_chromium()
    if binary is None:
        message = 'chromium not found: apt-get install chromium'
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return Chromium(binary, str(tmp_path))


def running(sup, uri=URI, pool='app'):
    """The pool's status once a worker shows ``uri`` running."""
    def check():
        status = sup.rpc.fcgi.getPoolStatus(pool)
        busy = [p for p in status['processes'] if p['request_uri'] == uri]
        return status if busy else None
    return sup.wait_for(check, 10, '%s running' % uri)


def without(row, keys):
    return {k: v for k, v in row.items() if k not in keys}


def test_page_shows_every_worker_the_running_request_and_the_figures(
        supervisor_factory, chromium, tmp_path):
    sup = supervisor_factory([PoolSpec(numprocs=3)])
    url = sup.pool('app').socket_url
    for _ in range(12):
        fcgi_request(url, uri='/warm')
    long_request(url, URI)
    status = running(sup)
    pids = sorted(sup.pids('app').values())
    busy = [p['pid'] for p in status['processes'] if p['request_uri'] == URI]
    page = sup.url + '/fcgi/status'
    live = DOM(chromium.dump_dom(page, script=True))
    still = DOM(chromium.dump_dom(page, script=False))
    assert sup.rpc.fcgi.getPoolStatus('app')['requests'] == status['requests']
    for dom in (live, still):
        assert sorted(dom.rows) == pids
        assert [pid for pid, row in dom.rows.items()
                if row['request'] == 'GET ' + URI] == busy
        for key in FIGURES:
            assert dom.pools['app'][key] == str(status[key]), key
        assert dom.pools['app']['limit'] == '3'
    # the script redrew the page from the JSON, twice: it has rates now
    assert live.ids['live'] == 'live, every 2 s'
    assert live.rates[('app', None, 'requests')] == '0.0 /s'
    assert still.ids['live'] == 'reload for new figures'
    assert still.rates[('app', None, 'requests')] == '- /s'
    # and drew what the server draws
    for pid in pids:
        assert without(live.rows[pid], VOLATILE) == without(still.rows[pid], VOLATILE)
    shot = chromium.screenshot(page, str(tmp_path / 'page.png'), 1200, 700)
    assert png_size(shot) == (1200, 700) and len(shot) > 10000


def test_unknown_pool_is_a_clear_page_with_404(supervisor_factory, chromium):
    sup = supervisor_factory([PoolSpec(numprocs=1)])
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(sup.url + '/fcgi/status?pool=nope', timeout=10)
    assert info.value.code == 404
    dom = DOM(chromium.dump_dom(sup.url + '/fcgi/status?pool=nope', script=False))
    assert dom.errors == ["no fcgi pool named 'nope' (known: app)"]


class PasswordSupervisor(Supervisor):
    """The harness's supervisord with a username and password on its
    inet_http_server; its own calls carry them in the URL."""

    def config_text(self):
        text = super().config_text()
        port = 'port = 127.0.0.1:%d\n' % self.port
        return text.replace(port, port + 'username = %s\npassword = %s\n' % CREDENTIALS, 1)

    @property
    def url(self):
        return 'http://%s:%s@127.0.0.1:%d' % (CREDENTIALS + (self.port,))


def get(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header('Authorization', 'Basic ' + base64.b64encode(
            ('%s:%s' % auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.status, reply.headers['Content-Type'], reply.read()


def test_page_and_json_are_behind_supervisors_own_auth(chromium):
    sup = PasswordSupervisor([PoolSpec(numprocs=2)])
    sup.start()
    try:
        fcgi_request(sup.pool('app').socket_url, uri='/warm')
        bare = 'http://127.0.0.1:%d/fcgi/status' % sup.port
        for path in (bare, bare + '.json', bare + '?pool=app'):
            with pytest.raises(urllib.error.HTTPError) as info:
                get(path)
            assert info.value.code == 401
        code, ctype, body = get(bare + '.json', CREDENTIALS)
        assert (code, ctype) == (200, 'application/json')
        served = json.loads(body)
        statuses = sup.rpc.fcgi.getAllPoolStatus()
        assert [without(p, ('start_since', 'processes')) for p in served] == \
            [without(p, ('start_since', 'processes')) for p in statuses]
        assert [[without(w, ('request_duration',)) for w in p['processes']]
                for p in served] == \
            [[without(w, ('request_duration',)) for w in p['processes']]
             for p in statuses]
        code, ctype, body = get(bare + '.json?pool=app', CREDENTIALS)
        assert json.loads(body)['name'] == 'app'
        # a browser given the password once keeps it for the script's reads
        dom = DOM(chromium.dump_dom(sup.url + '/fcgi/status'))
        assert dom.ids['live'] == 'live, every 2 s'
        assert sorted(dom.rows) == sorted(sup.pids('app').values())
    finally:
        sup.stop()


def test_live_page_follows_traffic_and_pools_coming_and_going(
        supervisor_factory, chromium, tmp_path):
    sup = supervisor_factory([PoolSpec(numprocs=2),
                              PoolSpec(name='other', numprocs=1)])
    url = sup.pool('app').socket_url
    traffic = Traffic(url)
    browser = DevTools(chromium, 390, 800)          # a phone's width
    try:
        browser.open(sup.url + '/fcgi/status')
        dom = browser.wait(lambda d: d.ids.get('live') == 'live, every 2 s', 20,
                           'the second reading')
        assert sorted(dom.pools) == ['app', 'other']
        rate = float(dom.rates[('app', None, 'requests')].split()[0])
        assert rate > 1, dom.rates
        assert browser.evaluate('window.innerWidth') == 390
        assert browser.evaluate('document.documentElement.scrollWidth') <= 390
        sup.rpc.supervisor.stopProcessGroup('other')
        sup.rpc.supervisor.removeProcessGroup('other')
        browser.wait(lambda d: sorted(d.pools) == ['app'], 10, 'other gone')
        sup.rpc.supervisor.addProcessGroup('other')
        browser.wait(lambda d: sorted(d.pools) == ['app', 'other'], 10,
                     'other back')
        browser.open(sup.url + '/fcgi/status?pool=other')
        browser.wait(lambda d: d.ids.get('live', '').startswith('live'), 20,
                     'the pool page live')
        sup.rpc.supervisor.stopProcessGroup('other')
        sup.rpc.supervisor.removeProcessGroup('other')
        dom = browser.wait(lambda d: d.errors, 10, 'the pool page says it is gone')
        assert dom.errors == ['pool other is gone (removed?); watching for it']
        traffic.stop()
        browser.open(sup.url + '/fcgi/status')
        browser.wait(lambda d: d.ids.get('live', '').startswith('live'), 20, 'live')
        sup.stop()
        dom = browser.wait(lambda d: d.ids.get('live', '').startswith('cannot reach'),
                           10, 'the page to say supervisord is gone')
        assert sorted(dom.pools) == ['app']     # the last figures stay, greyed
        assert 'stale' in browser.evaluate('document.body.className')
    finally:
        traffic.stop()
        browser.close()
