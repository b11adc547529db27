"""The plugin's `/fcgi/` paths on supervisord's own HTTP servers, and on an
address of its own (``metrics_listen``) for supervisords that only listen on
a unix socket.

supervisord calls our factory *before* it builds its HTTP servers, and builds
them again after every reload, so the handler is installed later: when
supervisord says it runs (`Web.install`, idempotent).  Each server gets it
behind supervisor's own `supervisor_auth_handler` when its section has a
username, exactly as `/RPC2`.

A page is a plain function ``(plugin, path, query, headers) -> (HTTP code,
content type, body bytes)``, listed in `ROUTES`; headers is a dict with
lowercased names.  Everything a page raises ends here as a 500 with one line,
and one line in supervisord's log: it never reaches supervisord's loop.
"""

import collections
import ipaddress
import socket

from supervisor.http import LogWrapper, supervisor_auth_handler, supervisor_http_server
from supervisor.medusa import asyncore_25 as asyncore

from supervisor_fcgi_ext.supervisord import metrics, statuspage

__all__ = ['PREFIX', 'ROUTES', 'OPEN_ROUTES', 'TEXT_TYPE', 'MAX_CONNECTIONS', 'Listen',
           'parse_listen',
           'respond', 'FcgiPaths', 'OwnServer', 'Web']

PREFIX = '/fcgi/'
TEXT_TYPE = 'text/plain; charset=utf-8'
ROUTES = {'/fcgi/metrics': metrics.respond,
          '/fcgi/status': statuspage.respond,
          '/fcgi/status.json': statuspage.respond}
# metrics_listen has no authentication: only the figures, no request URIs.
OPEN_ROUTES = {'/fcgi/metrics': metrics.respond}
_LISTEN_HELP = ('IP:PORT of this host, e.g. 127.0.0.1:9253 or [::1]:9253 '
                '(port 1-65535; no host names)')
Listen = collections.namedtuple('Listen', 'family ip port text')
MAX_CONNECTIONS = 32   # open at once on metrics_listen


def parse_listen(value):
    """The metrics_listen key: '127.0.0.1:9253' / '[::1]:9253' -> Listen;
    ValueError is the one line supervisord shows."""
    text = value.strip()
    host, _, port = text.rpartition(':')
    bracketed = host.startswith('[') and host.endswith(']')
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
        number = int(port)
    except ValueError:
        address, number = None, 0
    if address is None or not 1 <= number <= 65535 \
            or bracketed != (address.version == 6):
        raise ValueError('[rpcinterface:fcgi] metrics_listen = %r is refused '
                         '(allowed: %s)' % (value, _LISTEN_HELP))
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return Listen(family, str(address), number, text)


def respond(plugin, method, path, query, headers, routes=ROUTES):
    """(code, content type, body) for one request under /fcgi/."""
    page = routes.get(path)
    if page is None:
        return 404, TEXT_TYPE, ('fcgi: no page %s (known: %s)\n' % (
            path, ', '.join(sorted(routes)))).encode()
    if method not in ('GET', 'HEAD'):
        return 405, TEXT_TYPE, b'fcgi: %s only answers GET\n' % path.encode()
    return page(plugin, path, query, headers)


class FcgiPaths:
    """A medusa handler for every path under /fcgi/."""

    def __init__(self, plugin, routes=ROUTES):
        self.plugin = plugin
        self.routes = routes

    def match(self, request):
        path = request.split_uri()[0]
        return path.startswith(PREFIX) or path == PREFIX.rstrip('/')

    def handle_request(self, request):
        path, _, query, _ = request.split_uri()
        try:
            headers = {}
            for line in request.header:
                name, _, value = line.partition(':')
                headers[name.strip().lower()] = value.strip()
            code, content_type, body = respond(self.plugin, request.command.upper(),
                                               path, query or '', headers,
                                               self.routes)
        except Exception as e:   # never into supervisord's loop
            line = 'fcgi: %s failed: %s: %s' % (path, type(e).__name__,
                                                ' '.join(str(e).split()))
            self.plugin.logger.error(line)
            code, content_type, body = 500, TEXT_TYPE, (line + '\n').encode()
        request.reply_code = code
        request['Content-Type'] = content_type
        request['Content-Length'] = len(body)
        if request.command.upper() != 'HEAD':
            request.push(body)
        request.done()


def installed(server):
    """Our handler on this server, bare or behind supervisor's auth."""
    return any(isinstance(getattr(h, 'handler', h), FcgiPaths)
               for h in server.handlers)


class OwnServer(supervisor_http_server):
    """supervisor's HTTP server class on an address of the plugin's own, in
    supervisord's asyncore map (so served by its loop); no DNS look-up."""

    def __init__(self, family, ip, port, logger_object):
        self.ip = ip
        self.port = port
        self.family = family
        self.prebind(socket.socket(family, socket.SOCK_STREAM), logger_object)
        try:
            self.bind((ip, port))
        except OSError:
            self.close()   # prebind put it in the socket map
            raise
        self.server_name = ip
        self.postbind()

    def serving(self):
        return asyncore.socket_map.get(self._fileno) is self

    def connections(self):
        return sum(1 for d in list(asyncore.socket_map.values())
                   if getattr(d, 'server', None) is self)

    def handle_accept(self):
        """At most MAX_CONNECTIONS at once, more are closed at once: whoever
        can reach an address without authentication must not take
        supervisord's file descriptors."""
        if self.connections() < MAX_CONNECTIONS:
            return super().handle_accept()
        try:
            conn, _ = self.accept()      # None (a TypeError) when none waits
        except (OSError, TypeError):
            return
        conn.close()


class Web:
    """The handler, installed where it belongs, and the own address's server."""

    def __init__(self, plugin):
        self.plugin = plugin
        self.handler = FcgiPaths(plugin)
        self.open_handler = FcgiPaths(plugin, OPEN_ROUTES)
        self.own = None       # (metrics_listen value, OwnServer)

    def listen(self, address):
        """Open (or keep) the metrics_listen server (a Listen, or None);
        called by every factory call, so before a reload's servers: a port in
        use stops supervisord's start with one line, as its own ports do."""
        if self.own is not None and self.own[0] == address and self.own[1].serving():
            return
        self.close_own()
        if address is None:
            return
        try:
            server = OwnServer(address.family, address.ip, address.port,
                               LogWrapper(self.plugin.logger))
        except OSError as e:
            raise ValueError('[rpcinterface:fcgi] metrics_listen = %r cannot be '
                             'used: %s' % (address.text, e.strerror or e))
        server.install_handler(self.open_handler)
        self.own = (address, server)
        self.plugin.logger.info('fcgi: serving %s on %s (no authentication)'
                                % (', '.join(sorted(OPEN_ROUTES)), address.text))

    def close_own(self):
        if self.own is not None and self.own[1].serving():
            self.own[1].close()
        self.own = None

    def install(self, options):
        """Put the handler on every HTTP server supervisord has now; hand our
        own server to supervisord, whose close_httpservers() then closes it
        and its connections before a reload closes every fd."""
        for config, server in options.httpservers:
            if installed(server):
                continue
            handler = self.handler
            if config.get('username'):
                handler = supervisor_auth_handler(
                    {config['username']: config['password']}, handler)
            server.install_handler(handler)
        if self.own is not None and self.own[1].serving() and not any(
                server is self.own[1] for _, server in options.httpservers):
            options.httpservers.append(({'family': self.own[1].family,
                                         'section': 'metrics_listen'},
                                        self.own[1]))
