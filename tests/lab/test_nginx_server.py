"""The nginx harness (lab/nginx_server.py) with real nginx."""
from __future__ import annotations

import http.server
import os
import socket
import threading
import urllib.request

import pytest

from supervisor_fcgi_ext.lab.harness import HarnessError, Nginx, find_nginx


def test_nginx_port_in_use_is_the_reason_not_a_false_start(requires_nginx):
    # A connect() to the port would succeed: the test's socket answers it.
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        nginx = Nginx('tcp://127.0.0.1:9', port=port, nginx=requires_nginx)
        with pytest.raises(HarnessError) as info:
            nginx.start()
    assert str(info.value).splitlines()[0] == (
        'nginx exited with status 1 while waiting for its port: nginx: [emerg] '
        'bind() to 127.0.0.1:%d failed (98: Address already in use)' % port)
    assert nginx.proc is None and not os.path.exists(nginx.workdir)


def test_nginx_conf_is_self_contained(requires_nginx):
    plain = Nginx('tcp://127.0.0.1:9000', port=8080, nginx=requires_nginx)
    text = plain.conf_text
    assert 'server 127.0.0.1:9000;' in text and 'listen 127.0.0.1:8080;' in text
    assert 'include' not in text and 'keepalive' not in text
    assert 'fastcgi_param PATH_INFO $uri;' in text
    assert 'fastcgi_temp_path %s/fastcgi_temp;' % plain.workdir in text
    assert 'user' not in text   # the temp workdir is reachable by nobody
    plain.stop()   # never started: removes the workdir
    assert not os.path.exists(plain.workdir)
    kept = Nginx('unix:///run/x.sock', keepalive=True, nginx=requires_nginx)
    text = kept.conf_text
    kept.stop()
    assert 'server unix:/run/x.sock;' in text
    assert 'keepalive 16;' in text and 'fastcgi_keep_conn on;' in text
    counted = Nginx('tcp://127.0.0.1:9000', keepalive=3, nginx=requires_nginx)
    text = counted.conf_text
    counted.stop()
    assert 'keepalive 3;' in text and 'fastcgi_keep_conn on;' in text


def test_nginx_proxies_http_to_an_http_upstream(nginx_factory):
    """http=True: proxy_pass instead of fastcgi_pass (bench_worker's gunicorn)."""
    class Hello(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def do_GET(self):
            body = ('proxied %s' % self.path).encode()
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hello)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        nginx = nginx_factory('tcp://127.0.0.1:%d' % upstream.server_address[1],
                              http=True, keepalive=True)
        assert 'fastcgi' not in nginx.conf_text.split('location')[1]
        for _ in range(3):     # over one kept-alive upstream connection
            with urllib.request.urlopen(nginx.url + '/x?y=1', timeout=10) as resp:
                assert resp.read() == b'proxied /x?y=1'
    finally:
        upstream.shutdown()
        upstream.server_close()


@pytest.mark.skipif(os.geteuid() != 0, reason='nginx only switches user as root')
def test_nginx_workers_run_as_root_only_when_nobody_cannot_reach(tmp_path,
                                                                 requires_nginx):
    private = tmp_path / 'private'
    private.mkdir(mode=0o700)
    text = Nginx('unix://%s/app.sock' % private, workdir=str(tmp_path / 'ngx'),
                 nginx=requires_nginx).conf_text
    assert text.splitlines()[1].startswith('user root;')
    assert text.splitlines()[1].endswith(' or %s' % private)
    # tmp_path's parents are 0700, so a workdir there needs root on its own
    text = Nginx('tcp://127.0.0.1:9000', workdir=str(tmp_path / 'ngx'),
                 nginx=requires_nginx).conf_text
    assert text.splitlines()[1].startswith('user root;')


def test_missing_nginx_skips_locally_and_fails_in_ci(pytester, monkeypatch):
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'conftest.py')) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile('def test_needs_nginx(nginx_factory): pass')
    monkeypatch.setenv('NGINX', '/nonexistent/nginx')
    monkeypatch.delenv('CI', raising=False)
    local = pytester.runpytest_subprocess('-rs', '-p', 'no:cacheprovider')
    local.assert_outcomes(skipped=1)
    local.stdout.fnmatch_lines(['*nginx not found*apt-get install nginx-light'])
    monkeypatch.setenv('CI', 'true')
    ci = pytester.runpytest_subprocess('-p', 'no:cacheprovider')
    ci.assert_outcomes(errors=1)
    ci.stdout.fnmatch_lines(['*Failed: nginx not found*apt-get install nginx-light'])


def test_find_nginx_missing_says_how_to_install():
    with pytest.raises(HarnessError, match='apt-get install nginx-light$'):
        find_nginx('/nonexistent/nginx')
