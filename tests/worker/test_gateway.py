"""The WSGI side of a request: an app's answers, errors and streams, the
running request in the slot, and PEP 3333 to the letter behind real nginx."""
from __future__ import annotations

import http.client
import time

import pytest

from supervisor_fcgi_ext.lab.harness import Nginx
from supervisor_fcgi_ext.worker import gateway
from workerpool import (
    CODECS, WRITER_OPTIONS, in_background, stderr_of, wait_for, writer_named_in,
)


@pytest.fixture(params=CODECS)
def codec(request):
    return request.param


def test_app_module_from_the_working_directory(pool, app_dir):
    p = pool()
    proc = p.start('myapp', cwd=app_dir)
    assert p.request('/').body == b'app %d' % proc.pid
    assert p.request('/echo', method='POST', body=b'hello' * 1000).body == b'hello' * 1000
    assert p.request('/big').body == b'x' * 1000000
    assert p.request('/stream').body == b''.join(b'chunk%d;' % i for i in range(5))
    response = p.request('/boom')
    assert response.status == 500 and b'boom' in response.stderr
    assert p.request('/').status == 200
    slot = p.settled(proc)
    assert (slot.requests, slot.exceptions, slot.last_status) == (6, 1, 200)
    assert 'RuntimeError: boom' in stderr_of(proc)


@pytest.mark.parametrize('options', WRITER_OPTIONS)
def test_scoreboard_shows_the_running_request(pool, options):
    p = pool()
    proc = p.start(*options)
    call = in_background(p.request, '/?sleep=0.6', method='POST', body=b'12345')
    assert wait_for(lambda: p.state(proc) == 'running')
    slot = p.slot(proc)
    assert (slot.request_method, slot.request_uri, slot.content_length) == \
        ('POST', '/?sleep=0.6', 5)
    time.sleep(0.2)
    assert p.slot(proc).request_duration_us >= 200000
    call.result()
    slot = p.settled(proc)
    assert 600000 <= slot.request_duration_us < 5000000
    assert slot.last_request_memory > 1 << 20
    assert 0 <= slot.last_request_cpu < 50     # it slept
    assert writer_named_in(proc, options)


# -- PEP 3333 behind real nginx ---------------------------------------------------

# nginx's own fastcgi_params (Debian's nginx 1.22, its HTTP_HOST line too):
# the path in SCRIPT_NAME, and every request header as HTTP_*.
STOCK_FASTCGI_PARAMS = '''\
fastcgi_param  QUERY_STRING       $query_string;
fastcgi_param  REQUEST_METHOD     $request_method;
fastcgi_param  CONTENT_TYPE       $content_type;
fastcgi_param  CONTENT_LENGTH     $content_length;
fastcgi_param  SCRIPT_NAME        $fastcgi_script_name;
fastcgi_param  REQUEST_URI        $request_uri;
fastcgi_param  DOCUMENT_URI       $document_uri;
fastcgi_param  DOCUMENT_ROOT      $document_root;
fastcgi_param  SERVER_PROTOCOL    $server_protocol;
fastcgi_param  REQUEST_SCHEME     $scheme;
fastcgi_param  HTTPS              $https if_not_empty;
fastcgi_param  GATEWAY_INTERFACE  CGI/1.1;
fastcgi_param  SERVER_SOFTWARE    nginx/$nginx_version;
fastcgi_param  REMOTE_ADDR        $remote_addr;
fastcgi_param  REMOTE_PORT        $remote_port;
fastcgi_param  REMOTE_USER        $remote_user;
fastcgi_param  SERVER_ADDR        $server_addr;
fastcgi_param  SERVER_PORT        $server_port;
fastcgi_param  SERVER_NAME        $server_name;
fastcgi_param  REDIRECT_STATUS    200;
fastcgi_param  HTTP_HOST          $host;'''

# wsgiref's validator around an app that reads bodies, streams, and fails:
# any breach of PEP 3333 by the worker is an AssertionError (or a warning,
# made an error) in the worker's stderr and a 500.
VALIDATED_APP = '''
import sys, warnings, wsgiref.validate

warnings.simplefilter('error', wsgiref.validate.WSGIWarning)


def app(environ, start_response):
    path = environ['SCRIPT_NAME'] + environ['PATH_INFO']
    text = [('Content-Type', 'text/plain')]
    if path == '/echo':
        body = environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))
        start_response('200 OK', [('Content-Type', environ['CONTENT_TYPE'])])
        return [body]
    if path == '/lines':
        lines = list(environ['wsgi.input'])
        start_response('200 OK', text)
        return [b'%d lines' % len(lines)]
    if path == '/stream':
        start_response('200 OK', text)
        return (b'chunk%d;' % i for i in range(5))
    if path == '/write':
        start_response('200 OK', text)(b'written;')
        return [b'returned']
    if path == '/handled':
        try:
            raise KeyError('x')
        except KeyError:
            start_response('503 Service Unavailable', text, sys.exc_info())
        environ['wsgi.errors'].write('handled\\n')
        return [b'sorry']
    if path == '/boom':
        raise RuntimeError('boom')
    start_response('200 OK', text)
    return [('%s|%s|%s' % (environ['SCRIPT_NAME'], environ['PATH_INFO'],
                           environ['wsgi.multithread'])).encode()]


application = wsgiref.validate.validator(app)
'''


class StockParamsNginx(Nginx):
    """The harness's nginx, with nginx's stock fastcgi_params instead of its own."""

    @property
    def conf_text(self):
        lines = [line for line in super().conf_text.splitlines()
                 if not line.strip().startswith('fastcgi_param ')]
        at = next(i for i, line in enumerate(lines) if 'fastcgi_pass' in line)
        lines[at:at] = ['            ' + line for line in STOCK_FASTCGI_PARAMS.splitlines()]
        return '\n'.join(lines) + '\n'


@pytest.mark.parametrize('options', [
    pytest.param(['--python-scoreboard'], id='python-writer'),
    pytest.param([], id='default-writer'),
    pytest.param(['--threads', '3'], id='threads'),
])
def test_pep_3333_to_the_letter_behind_nginx_with_its_stock_params(
        pool, tmp_path, requires_nginx, options):
    (tmp_path / 'validated.py').write_text(VALIDATED_APP)
    p = pool()
    proc = p.start('validated', *options, cwd=str(tmp_path))
    with StockParamsNginx(p.address, nginx=requires_nginx,
                          workdir=str(tmp_path / 'nginx')) as nginx:
        client = http.client.HTTPConnection('127.0.0.1', nginx.port, timeout=10)

        def get(path, method='GET', body=None, headers=None):
            client.request(method, path, body, headers or {})
            response = client.getresponse()
            return response.status, response.read()
        try:
            body = bytes(range(256)) * 300
            assert get('/echo', 'POST', body, {'Content-Type': 'application/x-test'}) == \
                (200, body)
            assert get('/lines', 'PUT', b'a\nb\nc\n', {'Content-Type': 'text/plain'}) == \
                (200, b'3 lines')
            assert get('/stream') == (200, b''.join(b'chunk%d;' % i for i in range(5)))
            assert get('/write') == (200, b'written;returned')
            assert get('/handled') == (503, b'sorry')
            assert get('/boom')[0] == 500
            threaded = str(options == ['--threads', '3'])
            assert get('/') == (200, ('|/|%s' % threaded).encode())
            assert get('/a/b?q=1') == (200, ('/a/b||%s' % threaded).encode())
        finally:
            client.close()
        with open(nginx.error_log) as log:       # wsgi.errors: FastCGI's stderr
            assert 'FastCGI sent in stderr: "handled' in log.read()
    err = stderr_of(proc)
    assert 'RuntimeError: boom' in err
    assert 'AssertionError' not in err and 'WSGIWarning' not in err, err
    slot = p.settled(proc)
    assert (slot.requests, slot.exceptions) == (8, 1)
    assert writer_named_in(proc, options if options[:1] == ['--python-scoreboard'] else [])


def test_wsgi_environ_drops_the_http_content_headers_and_a_lone_slash_script():
    base = {'wsgi.version': (1, 0), 'wsgi.url_scheme': 'http'}
    params = {'CONTENT_TYPE': 'a/b', 'CONTENT_LENGTH': '3', 'HTTP_CONTENT_TYPE': 'a/b',
              'HTTP_CONTENT_LENGTH': '3', 'HTTP_HOST': 'h', 'SCRIPT_NAME': '/', 'HTTPS': 'on'}
    environ = gateway.wsgi_environ(params, base)
    assert environ is params
    assert sorted(environ) == ['CONTENT_LENGTH', 'CONTENT_TYPE', 'HTTPS', 'HTTP_HOST',
                               'PATH_INFO', 'SCRIPT_NAME', 'wsgi.url_scheme', 'wsgi.version']
    assert (environ['SCRIPT_NAME'], environ['PATH_INFO'], environ['wsgi.url_scheme']) == \
        ('', '/', 'https')
    assert gateway.wsgi_environ({'SCRIPT_NAME': '/app', 'PATH_INFO': '/x'}, base)['SCRIPT_NAME'] \
        == '/app'
