"""A real nginx in a temp dir: a free loopback port, fastcgi_pass (or
proxy_pass) to one upstream, a config that includes nothing of the host's."""
from __future__ import annotations

import os
import shutil
import signal
import socket

from supervisor_fcgi_ext.lab.fcgiclient import FastCGIError, parse_address
from supervisor_fcgi_ext.lab.processes import listening_ports
from supervisor_fcgi_ext.lab.servers import (HarnessError, Server, free_port,
                                             make_workdir, others_can_reach, wait_for)

__all__ = ['FASTCGI_PARAMS', 'NGINX_CANDIDATES', 'Nginx', 'find_nginx', 'nginx_upstream']

NGINX_CANDIDATES = ('/usr/sbin/nginx', '/usr/local/sbin/nginx',
                    '/usr/local/nginx/sbin/nginx')


def find_nginx(explicit=None):
    """Path of the nginx binary: ``explicit``, $NGINX, PATH, usual places."""
    explicit = explicit or os.environ.get('NGINX')
    candidates = [explicit] if explicit else (
        [shutil.which('nginx')] + list(NGINX_CANDIDATES))
    for path in candidates:
        if path and os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    looked = explicit or 'PATH, ' + ', '.join(NGINX_CANDIDATES)
    raise HarnessError('nginx not found (looked at %s): install it: '
                       'apt-get install nginx-light' % looked)


FASTCGI_PARAMS = """\
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param SCRIPT_NAME "";
fastcgi_param PATH_INFO $uri;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param DOCUMENT_URI $document_uri;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param REQUEST_SCHEME $scheme;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param REMOTE_PORT $remote_port;
fastcgi_param SERVER_ADDR $server_addr;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param SERVER_NAME $server_name;"""


def nginx_upstream(url):
    """nginx's spelling of a pool socket URL: 127.0.0.1:N or unix:/path."""
    try:
        family, sockaddr = parse_address(url)
    except FastCGIError as exc:
        raise HarnessError(str(exc))
    if family == socket.AF_UNIX:
        return 'unix:' + sockaddr
    if family == socket.AF_INET6:
        return '[%s]:%d' % sockaddr[:2]
    return '%s:%d' % sockaddr


class Nginx(Server):
    """nginx on a free loopback port, fastcgi_pass to one pool socket
    (``http=True``: proxy_pass, for comparing with HTTP app servers)."""

    name = 'nginx'
    cause_index = 0
    stop_timeout = 5.0

    def __init__(self, upstream, workdir=None, keepalive=False, port=None,
                 nginx=None, keep=False, http=False):
        self.upstream = upstream
        self.keepalive = keepalive
        self.http = http
        self.port = port
        self.keep = keep
        self.binary = find_nginx(nginx)
        self.workdir, self._created = make_workdir(workdir, 'sfe-nginx-')
        self.conf_path = os.path.join(self.workdir, 'nginx.conf')
        self.error_log = os.path.join(self.workdir, 'error.log')
        self.stdio_path = os.path.join(self.workdir, 'nginx.stdio.log')

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    @property
    def conf_text(self):
        if self.port is None:
            self.port = free_port()
        wd = self.workdir
        server = nginx_upstream(self.upstream)
        # True: 16 idle connections kept; a number: that many.
        idle = 16 if self.keepalive is True else self.keepalive
        keep = ('        keepalive %d;\n' % idle if self.keepalive else '')
        if self.http:
            passing = '            proxy_pass http://fcgi_pool;\n'
            if self.keepalive:
                passing = ('            proxy_http_version 1.1;\n'
                           '            proxy_set_header Connection "";\n' + passing)
        else:
            passing = ''.join('            %s\n' % line
                              for line in FASTCGI_PARAMS.splitlines())
            if self.keepalive:
                passing += '            fastcgi_keep_conn on;\n'
            passing += '            fastcgi_pass fcgi_pool;\n'

        temps = '\n'.join('    %s_temp_path %s/%s_temp;' % (kind, wd, kind)
                          for kind in ('client_body', 'fastcgi', 'proxy',
                                       'uwsgi', 'scgi'))
        return f"""daemon off;
{self._worker_user(server)}master_process on;
worker_processes 1;
error_log {self.error_log} notice;
pid {wd}/nginx.pid;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
{temps}
    upstream fcgi_pool {{
        server {server};
{keep}    }}
    server {{
        listen 127.0.0.1:{self.port};
        server_name localhost;
        location / {{
{passing}        }}
    }}
}}
"""

    def _worker_user(self, server):
        """'user root;' only when needed: nginx started as root runs its
        workers as nobody, who must traverse to the temp dirs and to a unix
        upstream socket."""
        if os.geteuid() != 0:
            return ''
        dirs = [self.workdir]
        if server.startswith('unix:'):
            dirs.append(os.path.dirname(server[len('unix:'):]))
        if all(others_can_reach(d) for d in dirs):
            return ''
        return 'user root;  # nobody cannot reach %s\n' % ' or '.join(dirs)

    def _log_paths(self):
        return [self.stdio_path, self.error_log]

    def start(self, timeout=10):
        """Start nginx and wait until its port accepts connections."""
        if self.proc is not None:
            raise HarnessError('nginx already started (pid %d)' % self.pid)
        with open(self.conf_path, 'w') as f:
            f.write(self.conf_text)
        # -e: otherwise nginx opens its default error log before the config.
        # A port in use fails after nginx's five bind() retries, 2.5 s.
        return self._launch(
            [self.binary, '-p', self.workdir, '-e', self.error_log, '-c',
             self.conf_path],
            lambda: wait_for(self._listening, timeout,
                             'nginx to listen on 127.0.0.1:%d' % self.port))

    def _listening(self):
        """Whether the master holds the listening socket. Not a connect():
        while nginx retries bind(), someone else may answer on that port."""
        self._check_alive('its port')
        try:
            return self.port in listening_ports(self.proc.pid)
        except OSError:
            return False   # exited meanwhile: the next check says why

    def stop(self):
        """Fast shutdown (SIGTERM), then kill leftovers; remove the workdir."""
        try:
            self._terminate(signal.SIGTERM)
        finally:
            self._cleanup()
