"""What the lab's servers share: a temp workdir, a process in its own
session, the wait for readiness, and a failed start told in one line.

Each server runs in its own session, so stop() can find and kill every
process it left behind (supervisord puts each child in its own process
group, so killing one group is not enough), and a failed start raises
HarnessError whose first line is the reason and whose rest is the log tail.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from supervisor_fcgi_ext.lab.processes import kill_session

__all__ = ['HarnessError', 'Server', 'free_port', 'make_workdir', 'others_can_reach',
           'stop_session', 'tail', 'wait_for']


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


def make_workdir(workdir, prefix):
    """(path, created): a temp dir others can traverse (nginx workers run
    as nobody and must reach unix sockets and temp dirs inside)."""
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        return os.path.abspath(workdir), False
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path, True


def others_can_reach(directory):
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


class Server:
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
