"""fcgi-worker's cost per request in instructions (valgrind's callgrind),
whole and by part: repeatable on a loaded machine, where wall clock is not.

    python benchmarks/profile_worker.py [--requests 400] [--parts all|whole]
                                        [--socket unix|tcp] [--python-path]

``whole``: a real fcgi-worker (C scoreboard) under callgrind serves nginx's
requests (the harness's fastcgi_params, one connection each, as nginx
without upstream keep-alive); run for N and 2N requests, the difference / N
is one request, start-up and shutdown cancelled out.

With the C fast path (worker/_fastpath.c; the default where it is built)
the parts are its C functions' inclusive costs in those two runs
(callgrind_annotate, the same difference / N): serve() whole, and in it
the records and params, the environ, start_response, the answer (framing,
the send, the scoreboard's second update) and the scoreboard's first; the
app is its own loop (below); ``rest`` is the Python around the C loop.  With
``--python-path`` (FCGI_PURE_PYTHON=1: the Python codec, no fast path)
the parts run the worker's own functions in a loop in this script under
callgrind, against a run of none: record parsing, params decoding, environ
construction, the WSGI call, response framing, the socket writes and the
scoreboard updates; ``rest``: whole minus the parts (objects, bookkeeping,
accept and close).  Without valgrind on PATH it says so and exits 0.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

BIN = os.path.dirname(sys.executable)
PARTS = ('records', 'params', 'environ', 'wsgi', 'framing', 'writes', 'scoreboard')
# the fast path's parts: its C functions (inclusive), and the app's loop
FAST_PARTS = (
    # a single-threaded worker's accept loop is in C (it serves each
    # connection itself); --threads workers call serve(fd) from Python
    ('fast path: accept_loop or serve(fd)', ('Server_accept_loop', 'Server_serve')),
    ('  records+params (parse_request)', ('parse_request',)),
    ('  environ', ('fp_plan_environ', 'fp_make_environ')),
    ('  start_response', ('fp_answer_vectorcall', 'Answer_call')),
    ('  answer: framing, send, 2nd update', ('fp_answer_list',)),
    ('  scoreboard, 1st update', ('Writer_request_started',)),
    ('  scoreboard, 2nd update', ('Writer_request_finished',)),
)


def request_bytes():
    from supervisor_fcgi_ext.lab.fcgiclient import cgi_params, encode_request
    return encode_request(1, cgi_params('/'))


def run_part(part, count):
    """``count`` rounds of ``part``, as the worker runs it for one request."""
    from supervisor_fcgi_ext.common import fastcgi
    from supervisor_fcgi_ext.lab.fcgiclient import cgi_params
    from supervisor_fcgi_ext.worker import gateway
    from supervisor_fcgi_ext.worker.cli import demo_app
    from supervisor_fcgi_ext.worker import connection
    from supervisor_fcgi_ext.worker.connection import MAX_PARAMS_BYTES
    from supervisor_fcgi_ext.worker.single import SingleWorker
    data = request_bytes()
    content = fastcgi.encode_params(cgi_params('/'))
    params = {}
    fastcgi.decode_params(content, params)
    server = SingleWorker.__new__(SingleWorker)
    server.environ = {}
    body = [b'ProcessId: 1\n']
    headers = [(b'Content-Type', b'text/plain')]
    def answer():
        # what the worker sends for the demo app's list response
        head = gateway.cgi_response(b'200 OK', headers, b'Content-Length: 13\r\n', body[0])
        return b''.join((fastcgi.frame_stream(fastcgi.STDOUT, 1, head, True),
                         connection.end_record(1, 0, fastcgi.REQUEST_COMPLETE)))

    if part == 'records':
        # as the worker: the request whole (C: with its params), else record by record
        for _ in range(count):
            reader = fastcgi.RecordReader()
            reader.feed(data)
            if reader.next_request(MAX_PARAMS_BYTES) is None:
                while reader.next_record() is not None:
                    pass
    elif part == 'params':
        for _ in range(count):
            fastcgi.decode_params(content, {})
    elif part == 'environ':
        base = {'wsgi.version': (1, 0), 'wsgi.multithread': False}
        for _ in range(count):
            environ = gateway.wsgi_environ(dict(params), base)
            environ['wsgi.input'] = environ['wsgi.errors'] = None
            server._sanitizeEnv(environ)
    elif part == 'wsgi':
        def start_response(status, headers, exc_info=None):
            return None
        for _ in range(count):
            demo_app(params, start_response)
    elif part == 'framing':
        for _ in range(count):
            answer()
    elif part == 'writes':
        data_out = answer()
        left, right = socket.socketpair()
        for _ in range(count):
            right.send(data)
            left.recv(65536)
            left.send(data_out)
            right.recv(65536)
    elif part == 'scoreboard':
        from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
        from supervisor_fcgi_ext.worker.slotwriter import CSlotWriter, SlotWriter
        board = tempfile.mkdtemp(dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
        try:
            ensure_pool_dir(board, 'p')
            writer = (CSlotWriter or SlotWriter)(os.path.join(board, 'p'))
            for _ in range(count):
                writer.request_started(params, True)
                writer.request_finished(200, False, 60, True)
            writer.close()
        finally:
            shutil.rmtree(board, True)


def callgrind(argv, tmp, name, **popen):
    """Start ``argv`` under callgrind; (process, output file)."""
    out = os.path.join(tmp, name + '.out')
    proc = subprocess.Popen(['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out]
                            + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **popen)
    return proc, out


def instructions(out):
    """Total Ir of a callgrind output file."""
    with open(out) as f:
        for line in f:
            if line.startswith(('summary:', 'totals:')):
                return int(line.split()[1])
    raise RuntimeError('no totals in %s' % out)


def part_cost(part, count, tmp):
    results = []
    for n in (0, count):
        proc, out = callgrind([sys.executable, __file__, '--run-part', part, str(n)],
                              tmp, '%s-%d' % (part, n))
        if proc.wait(600):
            raise RuntimeError('%s failed under valgrind' % part)
        results.append(instructions(out))
    return (results[1] - results[0]) / count


def serve(count, tmp, name, data, extra_env, kind='unix'):
    """A real fcgi-worker under callgrind answers ``count`` requests."""
    from supervisor_fcgi_ext.common.scoreboard import ENV_VAR
    from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
    board = tempfile.mkdtemp(dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    ensure_pool_dir(board, 'p')
    family = socket.AF_UNIX if kind == 'unix' else socket.AF_INET
    listener = socket.socket(family)
    listener.bind(os.path.join(tmp, name + '.sock') if kind == 'unix' else ('127.0.0.1', 0))
    address = listener.getsockname()
    listener.listen(64)
    # the same dict layouts every run: the runs' difference is the requests'
    env = dict(os.environ, SUPERVISOR_GROUP_NAME='p', PYTHONHASHSEED='0', **{ENV_VAR: board})
    env.update(extra_env)
    try:
        # it stops after the last request by itself (no signal to race)
        proc, out = callgrind([os.path.join(BIN, 'fcgi-worker'), '--max-requests',
                               str(count)], tmp, name, stdin=listener.fileno(), env=env)
        for _ in range(count):
            with socket.socket(family) as sock:
                sock.settimeout(120)
                sock.connect(address)
                sock.sendall(data)
                got = b''
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                if b'ProcessId' not in got:
                    raise RuntimeError('bad answer %r' % got[:200])
        if proc.wait(600):
            raise RuntimeError('fcgi-worker under valgrind exited %s' % proc.returncode)
        return out
    finally:
        listener.close()
        shutil.rmtree(board, True)


def whole_cost(count, tmp, extra_env, kind):
    """(Ir of one request, the two runs' callgrind files)."""
    data = request_bytes()
    few = serve(count, tmp, 'few', data, extra_env, kind)
    many = serve(2 * count, tmp, 'many', data, extra_env, kind)
    return (instructions(many) - instructions(few)) / count, few, many


def inclusive(out):
    """{function name: inclusive Ir} of a callgrind file (callgrind_annotate)."""
    text = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100', out],
                          capture_output=True, text=True, check=True).stdout
    costs = collections.Counter()
    for line in text.splitlines():
        # "  1,234 (0.5%)  file:function [object]": one line per function and object
        found = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*?:([\w.]+)(?:'\d+)? \[", line)
        if found:
            costs[found.group(2)] += int(found.group(1).replace(',', ''))
    return costs


def fast_parts(few, many, count):
    """FAST_PARTS' Ir per request, from the two runs."""
    small, large = inclusive(few), inclusive(many)
    return {label: sum(large[name] - small[name] for name in names) / count
            for label, names in FAST_PARTS}


def python_parts(whole, count, tmp):
    """The Python path's parts, each its own loop, and the rest."""
    from supervisor_fcgi_ext.common import fastcgi
    costs = {}
    for part in PARTS:
        if part == 'params' and fastcgi.CODEC == 'C':
            continue        # decoded in the same C call as the records
        label = 'records+params' if part == 'records' and fastcgi.CODEC == 'C' else part
        costs[label] = part_cost(part, count, tmp)
    costs['rest'] = whole - sum(costs.values())
    return costs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--requests', type=int, default=400)
    parser.add_argument('--parts', choices=('all', 'whole'), default='all')
    parser.add_argument('--python-path', action='store_true',
                        help='the pure-Python codec (FCGI_PURE_PYTHON=1), not the C one')
    parser.add_argument('--socket', choices=('unix', 'tcp'), default='unix',
                        help="the worker's socket for the whole request")
    parser.add_argument('--run-part', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_part:
        run_part(args.run_part[0], int(args.run_part[1]))
        return
    if shutil.which('valgrind') is None:
        print('skipped: no valgrind on PATH (Debian: valgrind)')
        return
    extra = {'FCGI_PURE_PYTHON': '1'} if args.python_path else {}
    os.environ.update(extra)
    from supervisor_fcgi_ext.common import fastcgi
    from supervisor_fcgi_ext.worker import fastpath
    fast = fastcgi.CODEC == 'C' and fastpath._fastpath is not None
    print('codec: %s%s; %d requests (and %d) per run; %s socket' % (
        fastcgi.CODEC, ', C fast path' if fast else '', args.requests, 2 * args.requests,
        args.socket))
    tmp = tempfile.mkdtemp(prefix='sfe-profile-')
    try:
        whole, few, many = whole_cost(args.requests, tmp, extra, args.socket)
        print('whole request: %.0f Ir' % whole, flush=True)
        if args.parts == 'all' and fast:
            costs = fast_parts(few, many, args.requests)
            costs['  app (the demo app, its own loop)'] = part_cost('wsgi', args.requests, tmp)
            costs['rest (Python around it)'] = whole - costs[FAST_PARTS[0][0]]
        elif args.parts == 'all':
            costs = python_parts(whole, args.requests, tmp)
        else:
            costs = {}
        costs['whole'] = whole
        print('\n%-40s %12s' % ('part', 'Ir/request'))
        for part, cost in costs.items():
            print('%-40s %12.0f' % (part, cost))
    finally:
        shutil.rmtree(tmp, True)


if __name__ == '__main__':
    main()
