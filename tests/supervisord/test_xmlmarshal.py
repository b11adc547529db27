"""Our XML-RPC replies are what xmlrpc.client writes for xmlrpc_safe of the
same value, byte for byte, with the C fill (_xmlfill.c) and with the Python
alone: over real statuses (PoolMonitor over slot files the real slot writer
wrote), random and hostile ones, entries changing one field at a time, and
through a real supervisord, where getPoolStatus reads as the plain dict
does.  The C fill takes garbage without a crash and keeps no memory."""
import http.client
import json
import math
import os
import random
import subprocess
import sys
import tracemalloc
import xmlrpc.client

import pytest

from cbuild import require_c_build
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


# long-lived, as supervisord's: each keeps its shapes from one test to the next
RENDERERS = [xmlmarshal.Renderer(fill=None)] + (
    [xmlmarshal.Renderer(fill=xmlmarshal.C_FILL)] if xmlmarshal.C_FILL else [])
requires_c = pytest.mark.skipif(xmlmarshal.C_FILL is None, reason='_xmlfill is not built')


def test_the_c_fill_is_built_wherever_a_compiler_and_headers_are():
    require_c_build()
    assert xmlmarshal.C_FILL is not None, \
        'supervisor_fcgi_ext.supervisord._xmlfill is not built: pip install -e .'


def assert_same(value):
    """The same reply (a dict or list), or <value> (anything), on each path."""
    if isinstance(value, (dict, list)):
        assert ours(value) == reference(value)
    expected = xmlrpc.client.Marshaller().dumps((xmlrpc_safe(value),))
    for renderer in RENDERERS:
        assert '<params>\n<param>\n%s</param>\n</params>\n' % renderer.render(value) \
            == expected, renderer.fill


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


class Text(str):
    """A str subclass: xmlrpc.client refuses to marshal it."""


def test_what_xmlrpc_client_refuses_it_refuses_the_same_way():
    for value, error in ((None, TypeError), ({'a': None}, TypeError),
                         ({'a': [2 ** 1100]}, OverflowError), ({'a': object()}, TypeError),
                         ({'a': Text('x')}, TypeError)):
        with pytest.raises(error):
            reference(value)
        with pytest.raises(error):
            xmlmarshal.reply(value)
        for renderer in RENDERERS:
            renderer.render({'a': 'x'})         # its shape is the last one tried
            with pytest.raises(error):
                renderer.render(value)


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
    # each worker shows its last request's URI: the last one sent is there
    # (which worker took which is the kernel's choice), escaped
    uris = {p['request_uri'] for p in over_rpc['processes']}
    assert '/x?%01%1B[2J%EF%BF%BE' in uris
    assert uris <= {'', '/', '/a?b=1&c=<2>', '/x?%01%1B[2J%EF%BF%BE'}
    every = sup.rpc.fcgi.getAllPoolStatus()
    every[0].pop('start_since')
    assert every == [plain]


def process_entry(**changes):
    """A process entry of getPoolStatus as poolstatus writes one (a busy worker)."""
    entry = {'name': 'app_07', 'pid': 4321, 'state': 'RUNNING', 'start': 1764650000,
             'connections': 1, 'requests_source': 'exact', 'accepted_conn': 1234,
             'requests': 1234, 'worker_state': 'busy', 'request_duration': 123456,
             'last_request_duration': 2345, 'request_method': 'GET',
             'request_uri': '/?sleep=30', 'content_length': 0, 'last_request_cpu': 0.5,
             'last_request_memory': 123456, 'exceptions': 0, 'slot_status': 'ok',
             'spawns': 1, 'exits': 0, 'backoffs': 0, 'fatals': 0, 'recycles': 0}
    entry.update(changes)
    return entry


# one field at a time, each change kept for the next: what a pool's entries
# go through between two calls
CHANGES = [{'request_duration': 123457}, {'request_duration': 2 ** 31 - 1},
           {'request_duration': 2 ** 31}, {'request_duration': 5}, {},
           {'request_uri': '/\x01\x1b[2J&<b>'}, {'request_uri': '/?sleep=30'},
           {'request_uri': '/\ud800\udc80\ufffe'}, {'request_uri': 'zoë/日本/\U0001f600'},
           {'request_method': '%s%d%%'}, {'pid': 4322, 'start': 1764650100, 'requests': 0},
           {'last_request_cpu': 0}, {'last_request_cpu': -0.0}, {'last_request_cpu': 0.0},
           {'last_request_cpu': float('nan')}, {'last_request_cpu': 1e22},
           {'connections': 1.0}, {'connections': True}, {'connections': 1},
           {'exceptions': -2 ** 31 + 1}, {'exceptions': -2 ** 31}, {'exceptions': 0},
           {'worker_state': Text('idle')}, {'worker_state': 'idle'}, {'name': 'app_08'}]


def test_entries_changing_one_field_at_a_time_are_written_fresh_each_time():
    entry, entries = process_entry(), []
    for change in CHANGES:
        entry = dict(entry, **change)
        entries.append(entry)
        if type(entry['worker_state']) is Text:
            for renderer in RENDERERS:
                with pytest.raises(TypeError):
                    renderer.render({'processes': [entry]})
            continue
        assert_same({'processes': [entry, process_entry()]})
        for renderer in RENDERERS:     # a fresh renderer writes the same
            assert renderer.render(entry) == xmlmarshal.Renderer(renderer.fill).render(entry)


@requires_c
def test_the_c_fill_writes_what_the_template_writes():
    """Over random entries of the shapes of random values; and None
    wherever the Python must decide (the template's own checks)."""
    rng = random.Random(16)
    renderer = RENDERERS[0]
    for _ in range(2000):
        entry = dict(zip(('name', 'pid', 'cpu', 'x%'), (
            rng.choice(HOSTILE + NUMBERS) for _ in range(4))))
        values = tuple(entry.values())
        shape = renderer._shape(tuple(entry), tuple(map(type, values)))
        if shape is None:
            continue
        written = xmlmarshal.C_FILL(entry, shape.keys, shape.types, shape.pieces)
        python = renderer._struct(entry)
        if written is not None:
            assert written == python == shape.template % values
        else:
            assert python is None or any(
                type(v) is int and abs(v) > 2 ** 31 - 1
                or type(v) is str and xmlmarshal.xml_text(v) != v for v in values)


@requires_c
def test_the_c_fill_takes_garbage_without_a_crash():
    fill = xmlmarshal.C_FILL
    shape = xmlmarshal.Renderer(fill=None)
    entry = process_entry()
    good = shape._shape(tuple(entry), tuple(map(type, entry.values())))
    args = (entry, good.keys, good.types, good.pieces)
    assert fill(*args) == good.template % tuple(entry.values())
    rng = random.Random(17)
    junk = [None, 1, 'x', b'x', (), ('a',), ('a', 'b'), (str,), (int, float), ['a'],
            {}, {'a': 1}, entry, good.keys, good.types, good.pieces, good.pieces[:-1],
            ('\ud800', 'x'), (object(), 'x'), (Text('name'),) * 23, (list,) * 23]
    for _ in range(3000):
        call = [rng.choice(junk + list(args)) for _ in range(rng.choice((4, 4, 4, 0, 3, 5)))]
        try:
            result = fill(*call)
        except (TypeError, ValueError, UnicodeError):
            continue
        assert result is None or type(result) is str
    for count in (0, 1, 22, 24):       # dicts of other sizes, other keys in place
        items = list(entry.items())[:count] + [('extra', 1)] * (count == 24)
        assert fill(dict(items), good.keys, good.types, good.pieces) is None
    assert fill(dict(reversed(entry.items())), good.keys, good.types, good.pieces) is None


@requires_c
def test_the_c_fill_writes_large_and_wide_texts():
    """Past its 8 KiB stack buffer, and non-ASCII keys and values (UTF-8)."""
    for uri in ('/' + 'a' * 20000, '/é' * 5000, '/\U0001f600' * 3000, 'zoë'):
        for key in ('request_uri', 'zoë 日本'):
            entry = dict(process_entry(request_uri=uri), **{key: uri})
            assert_same({'processes': [entry]})


@requires_c
def test_3000_renders_of_changing_entries_keep_no_memory():
    renderer = xmlmarshal.Renderer()

    def renders(count):
        for i in range(count):
            big = '/' + 'x' * (i % 3 * 5000) + '\U0001f600' * (i % 2)
            entries = [process_entry(request_duration=i, last_request_cpu=i / 7,
                                     request_uri=big if i % 5 else '/\x01<'),
                       process_entry(pid=2 ** 40 + i)]
            renderer.render({'processes': entries})
    tracemalloc.start()         # it sees PyMem_Malloc's large blocks too
    try:
        renders(3000)           # Python's free lists fill up
        before, nones = tracemalloc.get_traced_memory()[0], sys.getrefcount(None)
        renders(3000)
        assert tracemalloc.get_traced_memory()[0] - before < 16 * 1024
        assert abs(sys.getrefcount(None) - nones) < 100
    finally:
        tracemalloc.stop()


def test_FCGI_PURE_PYTHON_writes_with_the_python_alone():
    code = ('from supervisor_fcgi_ext.supervisord import xmlmarshal; '
            'print(xmlmarshal.FILL is None, xmlmarshal.RENDERER.fill is None)')
    for env, expected in (({'FCGI_PURE_PYTHON': '1'}, 'True True'),
                          ({}, '%s %s' % ((xmlmarshal.C_FILL is None,) * 2))):
        environ = dict(os.environ, **env)
        if not env:
            environ.pop('FCGI_PURE_PYTHON', None)
        out = subprocess.run([sys.executable, '-c', code], env=environ, check=True,
                             capture_output=True, text=True).stdout
        assert out.split() == expected.split()
