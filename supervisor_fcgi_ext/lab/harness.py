"""Run a real supervisord (with our plugin) and a real nginx in a temp dir.

Shared by the integration tests, the benchmark scripts and fcgi-experiment.
Everything listens on free loopback ports or temp unix sockets. Each server
runs in its own session, so stop() can find and kill every process it left
behind (supervisord puts each child in its own process group, so killing
one group is not enough) and a failed start raises HarnessError whose first
line is the reason and whose rest is the log tail.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field

from supervisor_fcgi_ext.lab.fcgiclient import FastCGIError, parse_address
from supervisor_fcgi_ext.lab.processes import (alive, cmdline, kill_session,
                                               listening_ports, session_processes,
                                               wait_gone)

__all__ = ['HarnessError', 'PoolSpec', 'Supervisor', 'Nginx', 'free_port',
           'find_nginx', 'wait_for', 'kill_session', 'session_processes']

BIN_DIR = os.path.dirname(sys.executable)
# Short: test and benchmark teardowns wait this long for stuck flup workers.
STOPWAITSECS = 1
NGINX_CANDIDATES = ('/usr/sbin/nginx', '/usr/local/sbin/nginx',
                    '/usr/local/nginx/sbin/nginx')


class HarnessError(Exception):
    """A server did not start or stop as asked; first line is the reason."""


def free_port(host='127.0.0.1'):
    """A port nobody listens on right now (racy, as port 0 tricks are)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.05):
    """Poll ``predicate`` until it returns a true value, which is returned;
    HarnessError('timed out after Ns waiting for WHAT') otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError('timed out after %gs waiting for %s'
                               % (timeout, what))
        time.sleep(interval)


def stop_session(sid, timeout=5.0):
    """SIGKILL every process of session ``sid``; HarnessError if any lives on."""
    left = kill_session(sid, timeout)
    if left:
        raise HarnessError('timed out after %gs waiting for processes of '
                           'session %d to exit: %s' % (timeout, sid, left))


def tail(path, lines=20):
    """Last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 16384, 0))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])


def _make_workdir(workdir, prefix):
    """(path, created): a temp dir others can traverse (nginx workers run
    as nobody and must reach unix sockets and temp dirs inside)."""
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        return os.path.abspath(workdir), False
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path, True


def _others_can_reach(directory):
    """Whether ``directory`` and all above it are searchable by anyone."""
    parent = os.path.abspath(directory)
    while True:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
        if parent == '/':
            return True
        parent = os.path.dirname(parent)


class _Server:
    """Process bookkeeping shared by Supervisor and Nginx."""

    name = 'server'
    # Which error line names the cause: the last for Python tracebacks,
    # the first for nginx (it ends with "still could not bind()").
    cause_index = -1
    proc = None
    stdio_path = None
    stop_timeout = 10.0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _spawn(self, argv):
        self._stdio = open(self.stdio_path, 'wb')   # this run's output only
        # A new session: stop() then finds every descendant by its sid.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self._stdio, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)

    def _log_paths(self):
        return [self.stdio_path]

    def log_tail(self, lines=20):
        parts = []
        for path in self._log_paths():
            text = tail(path, lines)
            if text:
                parts.append('--- %s\n%s' % (path, text))
        return '\n'.join(parts)

    def _exit_reason(self):
        """The error line that names the cause, from the first log with
        any output; else that log's last line."""
        for path in self._log_paths():
            lines = [l.strip() for l in tail(path, 50).splitlines()]
            lines = [l for l in lines
                     if l and not l.startswith(('File ', '^', '~'))]
            # supervisord adds usage hints after "Error: ..." or a traceback.
            errors = [l for l in lines if '[emerg]' in l
                      or l.partition(':')[0].endswith('Error')]
            if errors:
                return errors[self.cause_index]
            if lines:
                return lines[-1]
        return 'no output'

    def _check_alive(self, what):
        if self.proc.poll() is not None:
            raise HarnessError('%s exited with status %s while waiting for %s: %s'
                               % (self.name, self.proc.returncode, what,
                                  self._exit_reason()))

    def _launch(self, argv, ready):
        """Spawn the server and wait with ready(); a failed start stops
        everything and raises with the log tail."""
        self._spawn(argv)
        try:
            ready()
        except HarnessError as exc:
            raise self._abort(exc) from None
        except BaseException:
            self.stop()
            raise
        return self

    def _abort(self, exc):
        """Stop everything after a failed start; the error gets the log tail."""
        logs = self.log_tail()
        self.stop()
        return HarnessError(str(exc) + ('\n' + logs if logs else ''))

    def _terminate(self, sig):
        """Signal the server, wait, then kill whatever is left of its session."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
            stop_session(self.proc.pid)
            self.proc.wait(5)
        finally:
            self._stdio.close()
            self.proc = None

    def _cleanup(self):
        if self._created and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class PoolSpec:
    """One [fcgi-program:NAME] section; ``extra`` adds any other option."""
    name: str = 'app'
    command: str = 'fcgi-worker'
    numprocs: int = 6
    socket: str = 'tcp'     # 'tcp' | 'unix' | 'tcp://127.0.0.1:N' | 'unix:///path'
    backlog: int | None = None
    user: str | None = None
    extra: dict = field(default_factory=dict)
    socket_url: str | None = None   # resolved by Supervisor.write_config()

    def resolve_socket(self, workdir):
        if self.socket_url is None:
            if self.socket == 'tcp':
                self.socket_url = 'tcp://127.0.0.1:%d' % free_port()
            elif self.socket == 'unix':
                self.socket_url = 'unix://%s' % os.path.join(
                    workdir, '%s.sock' % self.name)
            else:
                self.socket_url = self.socket
        return self.socket_url


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


def resolve_command(command):
    """Put the venv's bin dir in front of a bare first word that lives there
    (``fcgi-worker``, ``python``): supervisord does not search our venv."""
    words = shlex.split(command)
    if words and '/' not in words[0]:
        candidate = os.path.join(BIN_DIR, words[0])
        if os.access(candidate, os.X_OK):
            words[0] = candidate
    return ' '.join(shlex.quote(w) for w in words)


class Supervisor(_Server):
    """A supervisord with the given pools; a context manager.

    ``daemon=True`` runs it as supervisord's default does (nodaemon = false):
    it forks, leaves the session it was started in for its own and writes
    its pid file; ``pid`` is then the daemon's, read from that file.
    """

    name = 'supervisord'
    _daemon_pid = None

    def __init__(self, pools, workdir=None, plugin_options=None,
                 ctlplugin=True, rpcinterface=True, extra_sections='',
                 unix_http_server=False, keep=False, daemon=False):
        self.daemon = daemon
        self.pools = list(pools)
        self.plugin_options = dict(plugin_options or {})
        self.ctlplugin = ctlplugin
        self.rpcinterface = rpcinterface
        self.extra_sections = extra_sections
        self.unix_http_server = unix_http_server
        self.keep = keep
        self.workdir, self._created = _make_workdir(workdir, 'sfe-sup-')
        self.conf_path = os.path.join(self.workdir, 'supervisord.conf')
        self.log_path = os.path.join(self.workdir, 'supervisord.log')
        self.pidfile_path = os.path.join(self.workdir, 'supervisord.pid')
        self.stdio_path = os.path.join(self.workdir, 'supervisord.stdio.log')
        self.unix_socket_path = os.path.join(self.workdir, 'supervisor.sock')
        self.port = None
        # supervisord waits up to stopwaitsecs before it SIGKILLs a worker
        # (one blocked in accept() ignores SIGTERM).
        self.stop_timeout = 10.0 + max(
            [float(p.extra.get('stopwaitsecs', STOPWAITSECS)) for p in self.pools]
            or [0])

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    @property
    def pid(self):
        """supervisord's pid: the daemon's once its pid file names it."""
        if not self.daemon:
            return super().pid
        return self._daemon_pid or self.read_pidfile()

    def read_pidfile(self):
        """The pid in the pid file if that process is a supervisord run
        with our config (not a stale file or a reused pid), else None."""
        try:
            with open(self.pidfile_path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if self.conf_path in cmdline(pid) and alive(pid):
            self._daemon_pid = pid
            return pid
        return None

    @property
    def rpc(self):
        """A fresh ServerProxy (they are not thread safe), 60 s timeout."""
        return self.rpc_proxy()

    def rpc_proxy(self, timeout=60.0):
        """A ServerProxy whose calls fail after ``timeout`` seconds instead of
        hanging (e.g. when something else holds our port and never answers)."""
        return xmlrpc.client.ServerProxy(self.url + '/RPC2',
                                         transport=_TimeoutTransport(timeout))

    def pool(self, name):
        for spec in self.pools:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def write_config(self):
        """Write supervisord.conf into the workdir and return its text."""
        text = self.config_text()
        with open(self.conf_path, 'w') as f:
            f.write(text)
        return text

    def config_text(self):
        """supervisord.conf as write_config() writes it (ports and sockets
        are chosen on the first call)."""
        if self.port is None:
            self.port = free_port()
        wd = self.workdir
        out = ['[supervisord]',
               'nodaemon = %s' % ('false' if self.daemon else 'true'),
               'logfile = %s' % self.log_path,
               'pidfile = %s' % self.pidfile_path,
               'childlogdir = %s' % wd, 'loglevel = info', '',
               '[inet_http_server]', 'port = 127.0.0.1:%d' % self.port, '']
        if self.unix_http_server:
            out += ['[unix_http_server]', 'file = %s' % self.unix_socket_path,
                    'chmod = 0700', '']
        out += ['[rpcinterface:supervisor]',
                'supervisor.rpcinterface_factory = '
                'supervisor.rpcinterface:make_main_rpcinterface', '']
        if self.rpcinterface:
            out += ['[rpcinterface:fcgi]',
                    'supervisor.rpcinterface_factory = '
                    'supervisor_fcgi_ext.rpcinterface:make_fcgi_rpcinterface']
            out += ['%s = %s' % kv for kv in self.plugin_options.items()]
            out.append('')
        if self.ctlplugin:
            out += ['[ctlplugin:fcgi]',
                    'supervisor.ctl_factory = '
                    'supervisor_fcgi_ext.controllerplugin:make_fcgi_controllerplugin',
                    '']
        out += ['[supervisorctl]', 'serverurl = %s' % self.url, '']
        for spec in self.pools:
            out += self._pool_section(spec)
        return '\n'.join(out) + '\n' + self.extra_sections

    def _pool_section(self, spec):
        url = spec.resolve_socket(self.workdir)
        options = {
            'socket': url,
            'process_name': '%(program_name)s_%(process_num)02d',
            'numprocs': spec.numprocs,
            'command': resolve_command(spec.command),
            'autorestart': 'true',
            # 1 s: a worker that dies on import is FATAL, not briefly RUNNING.
            'startsecs': 1,
            'stopwaitsecs': STOPWAITSECS,
            'redirect_stderr': 'false',
            'stdout_logfile': '%s/%%(program_name)s_%%(process_num)02d.out.log'
                              % self.workdir,
            'stderr_logfile': '%s/%%(program_name)s_%%(process_num)02d.err.log'
                              % self.workdir,
        }
        if url.startswith('unix://'):
            # nginx workers run as another user and must be able to connect.
            options['socket_mode'] = '0666'
        if spec.backlog is not None:
            options['socket_backlog'] = spec.backlog
        if spec.user is not None:
            options['user'] = spec.user
        options.update(spec.extra)
        return (['[fcgi-program:%s]' % spec.name]
                + ['%s = %s' % kv for kv in options.items()] + [''])

    def _log_paths(self):
        return [self.stdio_path, self.log_path]

    def start(self, wait_running=True, timeout=20):
        """Start supervisord; wait for XML-RPC and (optionally) all RUNNING."""
        if self.proc is not None:
            raise HarnessError('supervisord already started (pid %d)' % self.pid)
        self.write_config()
        deadline = time.monotonic() + timeout

        def ready():
            wait_for(self._rpc_ready, timeout, 'XML-RPC at %s' % self.url)
            if wait_running:
                self.wait_running(max(deadline - time.monotonic(), 0.1))
        argv = [sys.executable, '-m', 'supervisor.supervisord', '-c', self.conf_path]
        if not self.daemon:
            argv.insert(3, '-n')   # nodaemon = true in the file says so too
        return self._launch(argv, ready)

    def _check_alive(self, what):
        """As _Server's; a daemon must also still run once it wrote its pid
        file (the process we started exits 0 when it forks)."""
        if not self.daemon or self.proc.poll() != 0:
            return super()._check_alive(what)
        if self._daemon_pid is not None and not alive(self._daemon_pid):
            raise HarnessError('supervisord (daemon, pid %d) exited while '
                               'waiting for %s: %s' % (self._daemon_pid, what,
                                                       self._exit_reason()))

    def _rpc_ready(self):
        self._check_alive('XML-RPC at %s' % self.url)
        pid = self.pid
        if pid is None:
            return False   # a daemon that has not written its pid file yet
        try:
            rpc = self.rpc_proxy(2.0).supervisor
            # Our supervisord, not another one that got the same free port.
            return (rpc.getPID() == pid
                    and rpc.getState()['statename'] == 'RUNNING')
        except (OSError, xmlrpc.client.Error):
            return False

    def wait_running(self, timeout=20):
        """Wait until every process of every pool is RUNNING."""
        expected = sum(spec.numprocs for spec in self.pools)

        def all_running():
            self._check_alive('processes')
            infos = self.rpc.supervisor.getAllProcessInfo()
            fatal = [i for i in infos if i['statename'] == 'FATAL']
            if fatal:
                name = '%s:%s' % (fatal[0]['group'], fatal[0]['name'])
                raise HarnessError('%s is FATAL: %s\n%s' % (
                    name, fatal[0]['spawnerr'] or 'exited too quickly',
                    tail(fatal[0]['stderr_logfile'])))
            running = [i for i in infos if i['statename'] == 'RUNNING']
            return len(running) >= expected
        wait_for(all_running, timeout, 'all %d processes RUNNING' % expected)

    def wait_for(self, predicate, timeout, what):
        """Like wait_for(), but fails at once if supervisord died."""
        def check():
            self._check_alive(what)
            return predicate()
        return wait_for(check, timeout, what)

    def pids(self, pool):
        """{process name: pid} of the RUNNING processes of ``pool``."""
        return {i['name']: i['pid']
                for i in self.rpc.supervisor.getAllProcessInfo()
                if i['group'] == pool and i['statename'] == 'RUNNING'}

    def ctl(self, *args, check=False, timeout=30):
        """Run supervisorctl against this supervisord; output as text."""
        result = subprocess.run(
            [sys.executable, '-m', 'supervisor.supervisorctl', '-c',
             self.conf_path] + [str(a) for a in args],
            capture_output=True, text=True, timeout=timeout, cwd=self.workdir)
        if check and result.returncode != 0:
            raise HarnessError('supervisorctl %s exited %d: %s' % (
                ' '.join(map(str, args)), result.returncode,
                (result.stdout + result.stderr).strip()))
        return result

    def stop(self):
        """SIGTERM supervisord (it stops its children), then kill leftovers;
        a daemon is found by its pid file, even one whose start failed."""
        try:
            if self.daemon:
                self._stop_daemon()
            self._terminate(signal.SIGTERM)
        finally:
            self._cleanup()

    def _stop_daemon(self):
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
        # Not our child (its parent exited when it forked): poll, not wait().
        wait_gone([pid], self.stop_timeout)
        self._daemon_pid = None
        stop_session(pid)   # setsid() made it the leader of its own session


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


_FASTCGI_PARAMS = """\
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


class Nginx(_Server):
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
        self.workdir, self._created = _make_workdir(workdir, 'sfe-nginx-')
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
                              for line in _FASTCGI_PARAMS.splitlines())
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
        if all(_others_can_reach(d) for d in dirs):
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
