"""Our XML-RPC replies are what xmlrpc.client writes for xmlrpc_safe of the
same value, byte for byte: over real statuses (PoolMonitor over slot files
the real slot writer wrote), random and hostile ones, and through a real
supervisord, where getPoolStatus reads as the plain dict does."""
import http.client
import json
import math
import random
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec
from supervisor_fcgi_ext.supervisord import xmlmarshal
from supervisor_fcgi_ext.supervisord.xmlmarshal import xmlrpc_safe

HOSTILE = ('', 'a&b', '<tag>', 'x > y', '\x00', '\x01\x1b[2J', '\t\n', '\x7f\x85',
           '\ud800', '\udc80', '\ufffe', '\uffff', 'zoë 日本', '\U0001f600', '%s %d %%',
           '%(x)s', 'x' * 300)
NUMBERS = (0, 1, -1, 2 ** 31 - 1, 2 ** 31, -2 ** 31 + 1, -2 ** 31, 2 ** 40, -2 ** 63,
           2 ** 64 + 7, 0.0, -0.0, 0.5, 1e-7, 5e-324, 1.7e308, float('nan'),
           float('inf'), float('-inf'), True, False)
KEYS = ('name', 'a&b', '<k>', '%s', '%%', 'a\x01', 'a%01', 1, 2.5, True)


def reference(value):
    return xmlrpc.client.dumps((xmlrpc_safe(value),), methodresponse=True)


def ours(value):
    return xmlrpc.client.dumps((xmlmarshal.reply(value),), methodresponse=True)


def assert_same(value):
    """The same reply (a dict or list), or <value> (anything)."""
    if isinstance(value, (dict, list)):
        assert ours(value) == reference(value)
    assert xmlrpc.client.Marshaller().dumps((xmlrpc_safe(value),)) \
        == '<params>\n<param>\n%s</param>\n</params>\n' % xmlmarshal.render(value)


def test_real_statuses_are_written_as_xmlrpc_client_writes_them(pool_status):
    busy = pool_status(requests=(20, 10, 0), busy={1: ('POST', '/slow?a=1&b=<2>')},
                       stopped=2, sampled_connections=2, unreadable=True)
    closed = dict(pool_status(requests=(3,), socket_open=False), name='other')
    empty = dict(pool_status(requests=()), name='empty')
    assert {p['slot_status'] for p in busy['processes']} >= {'ok', 'absent', 'unavailable'}
    assert busy['warnings'] and not empty['processes']
    for status in (busy, closed, empty):
        assert_same(status)
    assert_same([busy, closed, empty])      # getAllPoolStatus
    assert_same([])


def test_a_real_status_with_big_and_hostile_values_is_written_the_same(pool_status):
    status = pool_status(requests=(5, 6, 7))
    first, second, third = status['processes']
    first['last_request_memory'] = 2 ** 33          # a big worker: a double
    second['request_uri'] = '/\ufffe\x01&<>'
    third['content_length'] = -2 ** 31
    status['warnings'].append('\x1b[31m<red>')
    assert_same(status)
    loaded = xmlrpc.client.loads(ours(status))[0][0]
    assert loaded['processes'][0]['last_request_memory'] == float(2 ** 33)
    assert loaded['processes'][1]['request_uri'] == '/%EF%BF%BE%01&<>'


def random_value(rng, depth=0):
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.choice(HOSTILE)
    if kind in (1, 2):
        return rng.choice(NUMBERS)
    if kind == 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 4:
        return tuple(random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    return {rng.choice(KEYS + HOSTILE): random_value(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def test_random_hostile_values_are_written_as_xmlrpc_client_writes_them():
    rng = random.Random(15)
    for _ in range(400):
        assert_same(random_value(rng))
        assert_same({'processes': [dict(zip(('a', 'b', 'c'), [random_value(rng)
                                                           for _ in range(3)]))
                                   for _ in range(4)]})


def test_structs_of_one_shape_with_different_values_each_get_theirs():
    """The template of a shape is reused; its values are each struct's."""
    rows = [{'name': name, 'pid': pid, 'cpu': cpu}
            for name in HOSTILE for pid in NUMBERS[:9] for cpu in (0.0, 2.5, math.inf)]
    assert_same(rows)
    assert_same({'processes': rows})


def test_what_xmlrpc_client_refuses_it_refuses_the_same_way():
    for value, error in ((None, TypeError), ({'a': None}, TypeError),
                         ({'a': [2 ** 1100]}, OverflowError), ({'a': object()}, TypeError)):
        with pytest.raises(error):
            reference(value)
        with pytest.raises(error):
            xmlmarshal.reply(value)


def test_the_templates_kept_are_bounded_whatever_the_shapes():
    renderer = xmlmarshal.Renderer()
    for i in range(5 * xmlmarshal.MAX_SHAPES):
        assert renderer.render({'k%d' % i: i}) == xmlmarshal.render({'k%d' % i: i})
    assert len(renderer.shapes) <= xmlmarshal.MAX_SHAPES


def test_a_reply_reads_as_its_dict_in_process():
    status = {'name': 'app', 'processes': [{'pid': 1}]}
    answer = xmlmarshal.reply(status)
    assert answer == status and isinstance(answer, dict)
    assert xmlmarshal.reply([status]) == [status]


def http_json(port, path):
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    conn.request('GET', path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body[:200]
    return json.loads(body)


def test_getPoolStatus_through_supervisord_reads_as_the_plain_dict(supervisor_factory):
    """Through a real supervisord and xmlrpc.client: the status as
    /fcgi/status.json writes the plugin's plain dict (no start_since: a
    second may pass between the two)."""
    sup = supervisor_factory([PoolSpec(numprocs=3)])
    url = sup.pool('app').socket_url
    for uri in ('/', '/a?b=1&c=<2>', '/x?\x01\x1b[2J\xef\xbf\xbe'):
        fcgi_request(url, uri=uri)
    sup.wait_for(lambda: sup.rpc.fcgi.getPoolStatus('app')['requests'] == 3, 10,
                 'three requests counted')
    over_rpc = sup.rpc.fcgi.getPoolStatus('app')
    plain = http_json(sup.port, '/fcgi/status.json?pool=app')
    for status in (over_rpc, plain):
        status.pop('start_since')
    assert over_rpc == plain
    assert sorted(p['request_uri'] for p in over_rpc['processes']) == [
        '/', '/a?b=1&c=<2>', '/x?%01%1B[2J%EF%BF%BE']
    every = sup.rpc.fcgi.getAllPoolStatus()
    every[0].pop('start_since')
    assert every == [plain]
