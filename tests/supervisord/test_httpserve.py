"""The /fcgi/ handler on supervisor's own medusa servers (real ones, bound
to loopback in this process), its auth wrapping, the metrics_listen key and
server; the integration tests serve it from real supervisords."""
import socket
import unittest

import pytest
from supervisor.http import LogWrapper, supervisor_af_inet_http_server, \
    supervisor_auth_handler
from supervisor.medusa import asyncore_25 as asyncore
from supervisor.tests.base import DummyLogger, DummyRequest

from supervisor_fcgi_ext.lab.harness import free_port
from supervisor_fcgi_ext.supervisord import httpserve
from supervisor_fcgi_ext.supervisord.settings import parse_settings


class BrokenPlugin:
    """A plugin whose pool status raises, as a bug of ours would."""

    def __init__(self):
        self.logger = DummyLogger()

    def fcgi_groups(self):
        return {'app': 'app'}

    def status(self, group):
        raise RuntimeError('status of %s broke\nsecond line' % group)


class EmptyPlugin(BrokenPlugin):
    def fcgi_groups(self):
        return {}


def request(path, command='GET', header=()):
    req = DummyRequest(path, None, None, None)
    req.command = command
    req.header = list(header)
    return req


def body(req):
    return b''.join(req.producers)   # DummyRequest keeps what was pushed


class Options:
    """supervisord's options as far as install() reads them."""

    def __init__(self, httpservers):
        self.httpservers = httpservers


@pytest.mark.parametrize('text, family, ip, port', [
    ('127.0.0.1:9253', socket.AF_INET, '127.0.0.1', 9253),
    (' 0.0.0.0:1 ', socket.AF_INET, '0.0.0.0', 1),
    ('[::1]:65535', socket.AF_INET6, '::1', 65535),
])
def test_parse_listen_accepts_ip_and_port(text, family, ip, port):
    assert httpserve.parse_listen(text)[:3] == (family, ip, port)


@pytest.mark.parametrize('text', ['localhost:9253', '9253', '127.0.0.1', '127.0.0.1:0',
                                  '127.0.0.1:65536', '127.0.0.1:x', '::1:9253',
                                  '[127.0.0.1]:9253', '', 'unix:///tmp/x.sock'])
def test_parse_listen_refuses_with_one_line(text):
    with pytest.raises(ValueError) as info:
        parse_settings({'metrics_listen': text})
    message = str(info.value)
    assert message.startswith("[rpcinterface:fcgi] metrics_listen = %r is refused "
                              "(allowed: IP:PORT" % text)
    assert '\n' not in message


def test_metrics_listen_is_off_by_default():
    assert parse_settings({})['metrics_listen'] is None


def test_only_paths_under_fcgi_match():
    paths = httpserve.FcgiPaths(EmptyPlugin())
    assert paths.match(request('/fcgi/metrics'))
    assert paths.match(request('/fcgi/nope'))
    assert paths.match(request('/fcgi'))
    assert not paths.match(request('/fcgix'))
    assert not paths.match(request('/RPC2'))


def test_unknown_path_is_404_naming_the_known_ones():
    code, content_type, text = httpserve.respond(EmptyPlugin(), 'GET', '/fcgi/nope',
                                                 '', {})
    assert (code, content_type) == (404, httpserve.TEXT_TYPE)
    assert text == ('fcgi: no page /fcgi/nope (known: %s)\n'
                    % ', '.join(sorted(httpserve.ROUTES))).encode()
    assert '/fcgi/metrics' in httpserve.ROUTES


def test_the_unauthenticated_address_serves_only_the_metrics():
    assert list(httpserve.OPEN_ROUTES) == ['/fcgi/metrics']
    for path in httpserve.ROUTES:
        if path != '/fcgi/metrics':
            code, _, text = httpserve.respond(EmptyPlugin(), 'GET', path, '', {},
                                              httpserve.OPEN_ROUTES)
            assert (code, text) == (404, b'fcgi: no page %s (known: /fcgi/metrics)\n'
                                    % path.encode())


def test_other_methods_than_get_are_405():
    assert httpserve.respond(EmptyPlugin(), 'POST', '/fcgi/metrics', '', {})[0] == 405


def test_a_failing_page_is_a_500_with_one_line_and_one_log_line():
    plugin = BrokenPlugin()
    req = request('/fcgi/metrics')
    httpserve.FcgiPaths(plugin).handle_request(req)
    assert req.reply_code == 500
    assert req['Content-Type'] == httpserve.TEXT_TYPE
    text = body(req).decode()
    assert text.startswith('fcgi: /fcgi/metrics failed: RuntimeError: status of app')
    assert text.endswith('status of app broke second line\n')
    assert text.count('\n') == 1
    assert plugin.logger.data == [text.rstrip('\n')]
    assert req._done


def test_handle_request_serves_the_page_with_its_length():
    req = request('/fcgi/metrics', header=['Accept: application/openmetrics-text'])
    httpserve.FcgiPaths(EmptyPlugin()).handle_request(req)
    text = body(req)
    assert req.reply_code == 200
    assert req['Content-Type'].startswith('application/openmetrics-text')
    assert req['Content-Length'] == len(text) and text.endswith(b'\n# EOF\n')


def test_head_gets_the_length_and_no_body():
    get, head = request('/fcgi/metrics'), request('/fcgi/metrics', command='HEAD')
    for req in (get, head):
        httpserve.FcgiPaths(EmptyPlugin()).handle_request(req)
    assert head.reply_code == 200 and head.producers == []
    assert head['Content-Length'] == get['Content-Length'] == len(body(get)) > 0


class InstallTests(unittest.TestCase):
    def setUp(self):
        self.logger = DummyLogger()
        self.plugin = EmptyPlugin()

    def server(self):
        server = supervisor_af_inet_http_server('127.0.0.1', 0, LogWrapper(self.logger))
        self.addCleanup(server.close)
        return server

    def ours(self, server):
        return [h for h in server.handlers
                if isinstance(getattr(h, 'handler', h), httpserve.FcgiPaths)]

    def test_install_is_idempotent_and_uses_the_servers_auth(self):
        open_server, locked = self.server(), self.server()
        options = Options([({'username': None, 'password': None}, open_server),
                           ({'username': 'u', 'password': 'p'}, locked)])
        web = httpserve.Web(self.plugin)
        for _ in range(3):
            web.install(options)
        [bare] = self.ours(open_server)
        [guarded] = self.ours(locked)
        self.assertIs(bare, web.handler)
        self.assertIsInstance(guarded, supervisor_auth_handler)
        self.assertIs(guarded.handler, web.handler)
        self.assertTrue(guarded.authorizer.authorize(['u', 'p']))
        self.assertFalse(guarded.authorizer.authorize(['u', 'x']))
        self.assertIs(locked.handlers[0], guarded)   # consulted first

    def test_listen_opens_once_and_hands_its_server_to_supervisord(self):
        address = httpserve.parse_listen('127.0.0.1:%d' % free_port())
        web = httpserve.Web(self.plugin)
        web.listen(address)
        self.addCleanup(web.close_own)
        server = web.own[1]
        self.assertIs(asyncore.socket_map[server._fileno], server)
        web.listen(address)              # the second factory call (unix server)
        self.assertIs(web.own[1], server)
        options = Options([])
        web.install(options)
        web.install(options)
        self.assertEqual([s for _, s in options.httpservers], [server])
        self.assertEqual(options.httpservers[0][0]['family'], socket.AF_INET)
        self.assertEqual(self.ours(server), [web.open_handler])
        with socket.create_connection(('127.0.0.1', address.port)):
            pass                          # it listens
        server.close()                    # supervisord's close_httpservers()
        web.listen(address)               # the factory after a reload
        self.assertIsNot(web.own[1], server)
        self.assertTrue(web.own[1].serving())

    def test_listen_on_a_port_in_use_is_one_line(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        text = '127.0.0.1:%d' % taken.getsockname()[1]
        before = dict(asyncore.socket_map)
        with self.assertRaises(ValueError) as info:
            httpserve.Web(self.plugin).listen(httpserve.parse_listen(text))
        self.assertEqual(str(info.exception),
                         "[rpcinterface:fcgi] metrics_listen = %r cannot be used: "
                         "Address already in use" % text)
        self.assertEqual(asyncore.socket_map, before)   # nothing left behind

    def test_the_own_server_closes_connections_beyond_its_limit(self):
        web = httpserve.Web(self.plugin)
        address = httpserve.parse_listen('127.0.0.1:%d' % free_port())
        web.listen(address)
        self.addCleanup(web.close_own)
        server = web.own[1]
        clients = []
        for _ in range(httpserve.MAX_CONNECTIONS + 3):
            client = socket.create_connection(('127.0.0.1', address.port))
            self.addCleanup(client.close)
            client.settimeout(5)
            clients.append(client)
            server.handle_accept()     # what supervisord's loop calls
        channels = [d for d in list(asyncore.socket_map.values())
                    if getattr(d, 'server', None) is server]
        for channel in channels:
            self.addCleanup(channel.close)
        self.assertEqual(len(channels), httpserve.MAX_CONNECTIONS)
        for client in clients[httpserve.MAX_CONNECTIONS:]:
            self.assertEqual(client.recv(1), b'')      # closed by the server
        channels[0].close()
        client = socket.create_connection(('127.0.0.1', address.port))
        self.addCleanup(client.close)
        server.handle_accept()
        self.assertEqual(server.connections(), httpserve.MAX_CONNECTIONS)

    def test_listen_none_closes_the_own_server(self):
        web = httpserve.Web(self.plugin)
        web.listen(httpserve.parse_listen('127.0.0.1:%d' % free_port()))
        server = web.own[1]
        web.listen(None)
        self.assertIsNone(web.own)
        self.assertFalse(server.serving())
