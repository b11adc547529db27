"""A real supervisord with our plugin and the given pools, in a temp dir.

Listens on a free loopback port (and a unix socket if asked); its pools on
free ports or temp unix sockets.  ``daemon=True`` runs it as supervisord's
default does (nodaemon = false).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field

from supervisor_fcgi_ext.lab.processes import alive, cmdline, wait_gone
from supervisor_fcgi_ext.lab.servers import (HarnessError, Server, free_port,
                                             make_workdir, stop_session, tail,
                                             wait_for)

__all__ = ['BIN_DIR', 'STOPWAITSECS', 'PoolSpec', 'Supervisor', 'resolve_command']

BIN_DIR = os.path.dirname(sys.executable)
# Short: test and benchmark teardowns wait this long for stuck flup workers.
STOPWAITSECS = 1


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


class Supervisor(Server):
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
        self.workdir, self._created = make_workdir(workdir, 'sfe-sup-')
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
        """As Server's; a daemon must also still run once it wrote its pid
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
        if self.conf_path in cmdline(pid):   # not a pid reused since it died
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
            # Not our child (its parent exited when it forked): poll, not wait().
            wait_gone([pid], self.stop_timeout)
        self._daemon_pid = None
        # setsid() made it the leader of its own session; the kernel reuses
        # no pid that still names a session, so its orphans are found by it.
        stop_session(pid)
