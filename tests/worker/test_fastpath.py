"""The C fast path (worker/_fastpath.c, fastpath.py): the ordinary request
answered in one call, byte for byte and count for count as the Python
path answers it, and every other request left or handed to that path."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

from supervisor_fcgi_ext.common import fastcgi
from supervisor_fcgi_ext.common.fastcgi import (
    END_REQUEST, KEEP_CONN, PARAMS, STDERR, STDIN, STDOUT, RecordReader, begin_request,
    encode_params, parse_end_request,
)
from supervisor_fcgi_ext.common.scoreboard import slot_path
from supervisor_fcgi_ext.lab.fcgiclient import FastCGIConnection, cgi_params
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir, read_slot
from supervisor_fcgi_ext.worker import fastpath, slotwriter
from supervisor_fcgi_ext.worker.single import SingleWorker
from cbuild import require_c_build
from workerpool import CODECS, record, stderr_of, wait_for

needs_fast_path = pytest.mark.skipif(
    fastpath._fastpath is None or fastcgi.CODEC != 'C',
    reason='the C fast path is not built (or FCGI_PURE_PYTHON is set)')



def test_built_wherever_a_compiler_and_headers_are():
    """Else every test of the fast path above would skip unseen."""
    require_c_build()
    if os.environ.get('FCGI_PURE_PYTHON'):
        pytest.skip('FCGI_PURE_PYTHON is set')
    assert (fastpath._fastpath is not None, fastcgi.CODEC) == (True, 'C'), \
        'worker/_fastpath or common/_fastcgi is not built: pip install -e .'

SEEN = []      # wsgi.input's type per request: BytesIO once the fast path began it


def app(environ, start_response):
    SEEN.append(type(environ['wsgi.input']).__name__)
    path = environ['PATH_INFO']
    if path == '/boom':
        raise RuntimeError('boom')
    if path == '/iter':
        start_response('200 OK', [('A', 'b')])
        return iter([b'x', b'', b'y'])
    if path == '/write':
        start_response('200 OK', [('A', 'b')])(b'w;')
        return [b'r']
    if path == '/errors':
        environ['wsgi.errors'].write('oops\n')
        environ['wsgi.errors'].flush()
    if path == '/twice':
        start_response('200 OK', [])
        start_response('200 OK', [])
    if path == '/exc_info':
        start_response('200 OK', [])
        try:
            raise KeyError(1)
        except KeyError:
            start_response('503 Later', [('X', 'y')], sys.exc_info())
        return (b'a', 'b', bytearray(b'c'))
    if path == '/no_start':
        return [b'x']
    if path == '/bad_body':
        start_response('200 OK', [])
        return [b'a', '\u20ac']
    if path == '/bad_header':
        start_response('200 OK', [('K', '\u20ac')])
    if path == '/bytes_headers':
        start_response(b'201 Made', [(b'K', b'v'), ('content-LENGTH', '2')])
        return [b'ab']
    if path == '/keywords':
        start_response(headers=[('K', 'v')], status='200 OK', exc_info=None)
        return [b'kw']
    if path == '/short_status':
        start_response('2', [])
        return [b'']
    if path == '/big':
        start_response('200 OK', [])
        return [b'z' * 200000, b'y' * 70000]
    if path == '/body':
        start_response('200 OK', [])
        return [environ['wsgi.input'].read()]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    keys = sorted((k, v) for k, v in environ.items() if k not in ('wsgi.input', 'wsgi.errors'))
    return [repr(keys).encode()]


def request(uri='/', extra=None, body=b'', flags=0, role=1):
    """A request's records as nginx sends them, in one piece."""
    stdin = record(STDIN, body) + record(STDIN) if body else record(STDIN)
    return (record(1, begin_request(role, flags))
            + record(PARAMS, encode_params(cgi_params(uri, 'POST' if body else 'GET', body,
                                                      extra)))
            + record(PARAMS) + stdin)


class Worker:
    """A SingleWorker in this process with its own slot, served socketpairs."""

    def __init__(self, tmp_path, fast, app=app, writer=None, **kwargs):
        self.board = str(tmp_path / 'board')
        ensure_pool_dir(self.board, 'pool')
        self.pid = 1 if fast else 2
        self.writer = (writer or slotwriter.CSlotWriter or slotwriter.SlotWriter)(
            os.path.join(self.board, 'pool'), self.pid)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(tmp_path / ('l%d' % self.pid)))
        self.listener.listen(1)
        self.server = SingleWorker(app, self.listener, scoreboard=self.writer, **kwargs)
        if not fast:
            self.server.fast = None

    def answer(self, *pieces, gap=0.0):
        """What the worker sends for ``pieces`` sent ``gap`` apart."""
        ours, theirs = socket.socketpair()
        got = []

        theirs.sendall(pieces[0])      # there when the worker looks

        def peer():
            for piece in pieces[1:]:
                time.sleep(gap)
                theirs.sendall(piece)
            while True:
                chunk = theirs.recv(65536)
                if not chunk:
                    break
                got.append(chunk)
        thread = threading.Thread(target=peer)
        thread.start()
        self.server.serve_connection(ours.detach(), None)
        thread.join(10)
        theirs.close()
        return b''.join(got)

    def slot(self):
        return read_slot(slot_path(self.board, 'pool', self.pid))

    def close(self):
        self.writer.close()
        self.listener.close()


@pytest.fixture
def workers(tmp_path):
    made = []

    def make(**kwargs):
        made[:] = [Worker(tmp_path, True, **kwargs), Worker(tmp_path, False, **kwargs)]
        return made
    yield make
    for w in made:
        w.close()


def streams(data):
    """The records of an answer by stream; a traceback in stderr cut to its
    last line (the worker's own frames differ between the paths)."""
    reader = RecordReader()
    reader.feed(data)
    out = {STDOUT: b'', STDERR: b'', END_REQUEST: []}
    ends = []
    while True:
        rec = reader.next_record()
        if rec is None:
            break
        if rec.type == END_REQUEST:
            out[END_REQUEST].append(parse_end_request(rec.content))
        else:
            if not rec.content:
                ends.append(rec.type)
            out[rec.type] += rec.content
    if b'Traceback' in out[STDERR]:
        out[STDERR] = out[STDERR].strip().splitlines()[-1]
    return out, ends


SLOT_FIELDS = ('requests', 'accepted_conn', 'connections', 'exceptions', 'last_status',
               'bytes_sent', 'protocol_errors', 'state', 'active')

# (request, what the fast path does: 'served' in C, 'handed' over to Python
# with the app running, or 'left' to Python before anything is done)
CASES = [
    pytest.param(request('/'), 'served', id='hello'),
    pytest.param(request('/a/b?q=1'), 'served', id='query'),
    pytest.param(request('/x', {'SCRIPT_NAME': '/', 'PATH_INFO': '//x/y'}), 'served',
                 id='lone-slash-script'),
    pytest.param(request('/s/p?z', {'SCRIPT_NAME': '/s', 'PATH_INFO': None,
                                    'QUERY_STRING': None}), 'served', id='path-from-uri'),
    pytest.param(request('/h', {'REQUEST_URI': None, 'PATH_INFO': None, 'SCRIPT_NAME': None}),
                 'served', id='no-uri'),
    pytest.param(request('/h', {'HTTPS': 'on', 'HTTP_CONTENT_TYPE': 'a',
                                'HTTP_CONTENT_LENGTH': '1'}), 'served', id='https'),
    pytest.param(request('/h', {'HTTPS': '1'}), 'served', id='https-1'),
    pytest.param(request('/body', body=b'hello'), 'served', id='body'),
    pytest.param(request('/body', body=b'b' * 40000), 'served', id='body-40k'),
    pytest.param(request('/exc_info'), 'served', id='exc_info-text-bytearray'),
    pytest.param(request('/bytes_headers'), 'served', id='bytes-headers'),
    pytest.param(request('/short_status'), 'served', id='short-status'),
    pytest.param(request('/keywords'), 'served', id='start-response-keywords'),
    pytest.param(request('/big'), 'served', id='big'),
    pytest.param(request('/boom'), 'handed', id='exception'),
    pytest.param(request('/iter'), 'handed', id='iterator'),
    pytest.param(request('/write'), 'handed', id='write'),
    pytest.param(request('/errors'), 'handed', id='wsgi-errors'),
    pytest.param(request('/twice'), 'handed', id='start-response-twice'),
    pytest.param(request('/no_start'), 'handed', id='no-start-response'),
    pytest.param(request('/bad_body'), 'handed', id='body-not-latin1'),
    pytest.param(request('/bad_header'), 'handed', id='header-not-latin1'),
    pytest.param(request('/s/p', {'SCRIPT_NAME': '/t', 'PATH_INFO': None}), 'left',
                 id='script-not-in-uri'),
    pytest.param(request('/', {'SERVER_PORT': None}), 'left', id='missing-param'),
    pytest.param(request('/', flags=KEEP_CONN), 'left', id='keep-conn'),
    pytest.param(request('/', role=2), 'left', id='authorizer'),
    pytest.param(request('/') + b'\x01\x0b', 'left', id='bytes-after'),
    pytest.param(request('/body', body=b'x')[:-8], 'left', id='body-unfinished'),
    pytest.param(b'GET / HTTP/1.1\r\n\r\n', 'left', id='garbage'),
    pytest.param(b'', 'left', id='closed-at-once'),
]


@needs_fast_path
@pytest.mark.parametrize('data, taken', CASES)
def test_the_fast_path_answers_as_the_python_path(workers, data, taken):
    fast, slow = workers(timeout=1)
    del SEEN[:]
    got = [w.answer(data) for w in (fast, slow)]
    assert streams(got[0]) == streams(got[1])
    assert [getattr(fast.slot(), f) for f in SLOT_FIELDS] == \
        [getattr(slow.slot(), f) for f in SLOT_FIELDS]
    assert fast.server.fast.served == (taken == 'served')
    if SEEN:
        assert SEEN[0] == ('InputStream' if taken == 'left' else 'BytesIO')
        assert SEEN[1] == 'InputStream'


@needs_fast_path
def test_a_request_in_pieces_is_left_to_the_python_path(workers):
    fast, slow = workers(timeout=2)
    data = request('/')
    got = [w.answer(data[:20], data[20:], gap=0.3) for w in (fast, slow)]
    assert streams(got[0]) == streams(got[1])
    assert b'Status: 200 OK' in got[0]
    assert fast.server.fast.served == 0
    assert (fast.slot().requests, fast.slot().accepted_conn) == (1, 1)


@needs_fast_path
@pytest.mark.parametrize('writer', ['SlotWriter', 'CSlotWriter'])
def test_both_slot_writers_count_a_fast_request(workers, writer):
    if getattr(slotwriter, writer) is None:
        pytest.skip('the C writer is not built')
    fast, slow = workers(writer=getattr(slotwriter, writer))
    for w in (fast, slow):
        w.answer(request('/body', body=b'12345'))
        w.answer(request('/boom'))
    assert [getattr(fast.slot(), f) for f in SLOT_FIELDS] == \
        [getattr(slow.slot(), f) for f in SLOT_FIELDS]
    slot = fast.slot()
    assert (slot.requests, slot.exceptions, slot.accepted_conn, slot.state) == \
        (2, 1, 2, 'idle')
    assert fast.server.fast.served == 1


@needs_fast_path
def test_an_answer_the_peer_is_slow_to_take_shows_finishing(workers):
    body = 4 << 20

    def big_app(environ, start_response):
        start_response('200 OK', [])
        return [b'x' * body]
    fast, _ = workers(app=big_app, timeout=5)
    ours, theirs = socket.socketpair()
    theirs.sendall(request('/body', body=b'q' * 60000))
    serving = threading.Thread(target=fast.server.serve_connection, args=(ours.detach(), None))
    serving.start()
    assert wait_for(lambda: fast.slot().state == 'finishing')
    got = []
    theirs.settimeout(10)
    while True:
        chunk = theirs.recv(1 << 20)
        if not chunk:
            break
        got.append(chunk)
    serving.join(10)
    theirs.close()
    out, ends = streams(b''.join(got))
    assert out[STDOUT].endswith(b'\r\n\r\n' + b'x' * body)
    assert out[END_REQUEST] == [(0, 0)]
    slot = fast.slot()
    assert (slot.requests, slot.state, slot.connections, slot.last_status) == \
        (1, 'idle', 0, 200)
    assert fast.server.fast.served == 1


@needs_fast_path
def test_a_peer_that_takes_nothing_costs_the_timeout_and_nothing_else(workers):
    def big_app(environ, start_response):
        start_response('200 OK', [])
        return [b'x' * (8 << 20)]
    fast, _ = workers(app=big_app, timeout=0.5)
    ours, theirs = socket.socketpair()
    theirs.sendall(request('/'))
    began = time.monotonic()
    fast.server.serve_connection(ours.detach(), None)
    assert 0.4 < time.monotonic() - began < 3
    theirs.close()
    slot = fast.slot()
    assert (slot.requests, slot.state, slot.connections, slot.exceptions) == \
        (1, 'idle', 0, 0)


@needs_fast_path
def test_a_peer_gone_before_the_answer_is_no_error(workers):
    def gone_app(environ, start_response):
        theirs.close()           # the web server gave up
        start_response('200 OK', [])
        return [b'x' * 300000]
    fast, slow = workers(app=gone_app)
    for w in (fast, slow):
        ours, theirs = socket.socketpair()
        theirs.sendall(request('/'))
        w.server.serve_connection(ours.detach(), None)
    assert [getattr(fast.slot(), f) for f in SLOT_FIELDS] == \
        [getattr(slow.slot(), f) for f in SLOT_FIELDS]
    assert fast.server.fast.served == 1


@needs_fast_path
def test_max_requests_counts_the_fast_requests(workers):
    fast, _ = workers(max_requests=3)
    for _ in range(2):
        fast.answer(request('/'))
    assert not fast.server.stopping
    fast.answer(request('/'))
    assert fast.server.stopping and fast.server.stop_reason == 'max-requests (3)'
    assert fast.server.fast.served == 3


# -- the real worker ----------------------------------------------------------------

INPUT_TYPE_APP = '''
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [type(environ['wsgi.input']).__name__.encode()]
'''


@pytest.fixture(params=CODECS)
def codec(request):
    return request.param


@pytest.mark.parametrize('options', [pytest.param([], id='single'),
                                     pytest.param(['--threads', '2'], id='threads')])
def test_the_real_worker_takes_the_fast_path_for_what_nginx_sends(pool, tmp_path, codec,
                                                                  options):
    (tmp_path / 'inputtype.py').write_text(INPUT_TYPE_APP)
    p = pool()
    proc = p.start('inputtype', *options, cwd=str(tmp_path))
    fast = codec == 'C' and fastpath._fastpath is not None
    # one request a connection, whole: the fast path's (its wsgi.input a BytesIO)
    assert p.request('/').body == (b'BytesIO' if fast else b'InputStream')
    assert p.request('/', method='POST', body=b'x' * 1000).body == \
        (b'BytesIO' if fast else b'InputStream')
    with FastCGIConnection(p.address, timeout=10) as conn:     # FCGI_KEEP_CONN
        assert conn.request('/').body == b'InputStream'
        assert conn.request('/').body == b'InputStream'
    slot = p.settled(proc)
    assert (slot.requests, slot.accepted_conn, slot.connections) == (4, 3, 0)
    assert ('C fast path' in stderr_of(proc)) == fast


@needs_fast_path
def test_a_failure_of_the_fast_path_itself_costs_the_connection_not_the_worker(
        workers, capsys):
    class BrokenWriter(slotwriter.SlotWriter):
        __slots__ = ()

        def request_started(self, *args, **kwargs):
            raise RuntimeError('slot gone')
    for w in workers(writer=BrokenWriter):
        assert w.answer(request('/')) == b''        # closed unanswered
    assert capsys.readouterr().err.count('dropped connection: slot gone') == 2


@needs_fast_path
def test_the_fast_path_keeps_no_memory_and_no_fd_of_its_requests(workers):
    import gc
    fast, _ = workers(timeout=1)
    kinds = [request('/'), request('/body', body=b'hello'), request('/boom'),
             request('/write'), request('/exc_info'), request('/', {'SERVER_PORT': None})]

    def rounds(n):
        for _ in range(n):
            for data in kinds:
                fast.answer(data)
        del SEEN[:]
        gc.collect()
    rounds(400)       # the count settles over the first few thousand requests
    fds, blocks = len(os.listdir('/proc/self/fd')), sys.getallocatedblocks()
    rounds(500)
    assert len(os.listdir('/proc/self/fd')) == fds
    # one object kept by one kind of request would be 500 blocks
    assert sys.getallocatedblocks() - blocks < 250
    assert fast.server.fast.served == 900 * 3
