"""The status page and its JSON, from status dicts the real PoolMonitor makes
out of real slot files (the browser test runs it in real supervisord)."""
import json
import os
import time

import pytest
from supervisor.states import SupervisorStates
from supervisor.tests.base import DummyOptions, DummySupervisor

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import statuspage
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView

from viewsdom import DOM   # tests/viewsdom.py


def write_slot(pool_dir, pid, **fields):
    slot = scoreboard.Slot(pid=pid, start_time=time.time() - 60, **fields)
    with open(os.path.join(pool_dir, '%d.slot' % pid), 'wb') as f:
        f.write(scoreboard.encode_slot(slot, seq=2))


def pool_of(pool_dir, name='pool', busy_for=0.0, uri='/a?b=1'):
    """A status dict of 3 workers: 101 busy for ``busy_for`` s, 102 idle, 103 stopped."""
    base = os.path.dirname(pool_dir)
    write_slot(pool_dir, 101, state='running', requests=7, accepted_conn=7,
               request_method='GET', request_uri=uri,
               request_start=time.time() - busy_for, last_request_duration_us=2500,
               last_request_cpu=12.0, last_request_memory=50 * 1048576)
    write_slot(pool_dir, 102, state='idle', requests=3, accepted_conn=3,
               last_request_duration_us=1500000)
    view = PoolView(name, 'tcp://127.0.0.1:9000', 128, None,
                    [ProcessView(name + '_00', 101, 'RUNNING', 1),
                     ProcessView(name + '_01', 102, 'RUNNING', 1),
                     ProcessView(name + '_02', 0, 'STOPPED', 0)], False)
    return PoolMonitor(name, base).status(view)


def test_page_holds_every_figure_and_worker(pool_dir):
    pool = pool_of(pool_dir)
    dom = DOM(statuspage.render_page([pool], known=['pool']))
    figures = dom.pools['pool']
    for key in ('requests', 'accepted_conn', 'active_processes', 'idle_processes',
                'total_processes', 'max_listen_queue', 'fairness', 'balance',
                'slow_requests', 'requests_source', 'socket', 'name'):
        assert figures[key] == str(pool[key]), key
    assert figures['listen_queue_len'] == '128'
    assert figures['limit'] == '3'
    assert dom.rows[101]['request'] == 'GET /a?b=1'
    assert dom.rows[101]['worker_state'] == 'running'
    assert dom.rows[101]['memory'] == '50.0 MiB'
    assert dom.rows[101]['cpu'] == '12%'
    assert dom.rows[102]['last'] == '1.5 s'
    assert dom.rows[102]['request'] == ''           # idle: no current request
    assert dom.rows[0]['worker_state'] == 'stopped'
    assert [p['requests'] for p in pool['processes']] == [7, 3, 0]


@pytest.mark.parametrize('busy_for, kind', [(0.0, 'busy'), (2.0, 'slow'), (30.0, 'stuck')])
def test_a_slow_or_stuck_request_stands_out(pool_dir, busy_for, kind):
    pool = pool_of(pool_dir, busy_for=busy_for)
    dom = DOM(statuspage.render_page([pool]))
    assert kind in dom.classes[101]
    assert not {'busy', 'slow', 'stuck'} & set(dom.classes[102])


def test_worker_text_is_escaped_and_made_safe(pool_dir):
    uri = '/<script>alert(1)</script>"\x1b[31m'
    pool = pool_of(pool_dir, uri=uri)
    page = statuspage.render_page([pool])
    assert '<script>alert' not in page and '\x1b' not in page
    assert DOM(page).rows[101]['request'] == 'GET /<script>alert(1)</script>"%1B[31m'
    assert len(DOM(page).scripts) == 2        # the config and the refresher only


def test_page_without_pools_and_with_an_error_says_so():
    assert 'no fcgi-program pools configured' in statuspage.render_page([])
    page = statuspage.render_page([], 'x<', error="no fcgi pool named 'x<'")
    assert 'no fcgi pool named &#x27;x&lt;&#x27;' in page
    assert '"pool": "x\\u003c"' in page      # the config cannot close its script


class DummyPlugin:
    """The two plugin methods the page uses, over prepared statuses."""

    def __init__(self, statuses, mood=SupervisorStates.RUNNING):
        self.statuses = statuses
        self.supervisord = DummySupervisor(DummyOptions())
        self.supervisord.options.mood = mood

    def fcgi_groups(self):
        return {name: name for name in self.statuses}

    def status(self, group):
        return self.statuses[group]


def test_respond_serves_the_page_and_the_json_of_every_pool(pool_dir, tmp_path):
    other = os.path.join(str(tmp_path), 'board', 'zz')
    os.mkdir(other, 0o700)
    statuses = {'pool': pool_of(pool_dir), 'zz': pool_of(other, 'zz')}
    plugin = DummyPlugin(statuses)
    code, ctype, body = statuspage.respond(plugin, '/fcgi/status.json', '')
    assert (code, ctype) == (200, 'application/json')
    assert json.loads(body) == [statuses['pool'], statuses['zz']]
    code, _, body = statuspage.respond(plugin, '/fcgi/status.json', 'pool=zz')
    assert json.loads(body) == statuses['zz']
    code, ctype, body = statuspage.respond(plugin, '/fcgi/status', 'pool=zz')
    assert (code, ctype) == (200, 'text/html; charset=utf-8')
    assert list(DOM(body.decode()).pools) == ['zz']
    _, _, body = statuspage.respond(plugin, '/fcgi/status', '')
    assert list(DOM(body.decode()).pools) == ['pool', 'zz']


def test_respond_unknown_pool_is_a_clear_404(pool_dir):
    plugin = DummyPlugin({'pool': pool_of(pool_dir)})
    code, ctype, body = statuspage.respond(plugin, '/fcgi/status', 'pool=nope')
    assert (code, ctype) == (404, 'text/html; charset=utf-8')
    assert "no fcgi pool named &#x27;nope&#x27; (known: pool)" in body.decode()
    code, ctype, body = statuspage.respond(plugin, '/fcgi/status.json', 'pool=nope')
    assert (code, json.loads(body)) == (404, {'error': "no fcgi pool named 'nope' "
                                                       "(known: pool)"})


def test_respond_while_supervisord_shuts_down_is_503(pool_dir):
    plugin = DummyPlugin({'pool': pool_of(pool_dir)}, SupervisorStates.SHUTDOWN)
    assert statuspage.respond(plugin, '/fcgi/status', '')[0] == 503


def test_json_strings_are_made_safe():
    assert statuspage.safe_strings({'a': ['x\x00', 1, {'b': '\ufffe'}]}) == \
        {'a': ['x%00', 1, {'b': '%EF%BF%BE'}]}
