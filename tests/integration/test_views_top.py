"""supervisorctl fcgi_top in a real pseudo-terminal (tmux) against a real
supervisord whose fcgi-worker pool is serving requests."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor, wait_for

from conftest import in_ci
from viewsdom import Traffic, long_request

PROMPT = 'PROMPT$'
LONG_URI = '/long?sleep=30'


class Terminal:
    """A tmux session of its own server (socket in the test's temp dir)
    running a bare bash; screen() is what a person would see."""

    def __init__(self, tmux, workdir, width=120, height=40):
        self.argv = [tmux, '-S', os.path.join(workdir, 'tmux.sock'), '-f', '/dev/null']
        env = 'env -i PATH=%s HOME=%s TERM=screen PS1=%s' % (
            shlex.quote(os.environ.get('PATH', '/usr/bin:/bin')), shlex.quote(workdir),
            shlex.quote(PROMPT + ' '))
        self.tmux('new-session', '-d', '-s', 'top', '-x', str(width), '-y', str(height),
                  env + ' bash --norc --noprofile')

    def tmux(self, *args):
        return subprocess.run(self.argv + list(args), capture_output=True, text=True,
                              timeout=20, check=True).stdout

    def type(self, *keys):
        self.tmux('send-keys', '-t', 'top', *keys)

    def screen(self):
        return self.tmux('capture-pane', '-p', '-t', 'top')

    def wait(self, predicate, timeout, what):
        """The screen once predicate(screen) is true."""
        last = ['']

        def check():
            last[0] = self.screen()
            return last[0] if predicate(last[0]) else None
        try:
            return wait_for(check, timeout, what, interval=0.1)
        except Exception as exc:
            raise AssertionError('%s; the screen:\n%s' % (exc, last[0])) from None

    def prompt_back(self):
        """The shell prompt is the last line again, the full-screen mode is
        over, and the terminal echoes and reads lines again."""
        self.wait(lambda s: s.rstrip().splitlines()[-1:] == [PROMPT], 10, 'the prompt')
        assert self.tmux('display', '-p', '-t', 'top', '#{alternate_on}').strip() == '0'
        self.type("stty -a | tr ' ;' '\\n\\n' | grep -x -e echo -e icanon | "
                  "tr '\\n' ,; echo", 'Enter')
        self.wait(lambda s: 'icanon,echo,' in s, 10, 'stty to say icanon and echo')

    def close(self):
        subprocess.run(self.argv + ['kill-server'], capture_output=True, timeout=20)


@pytest.fixture
def terminal(tmp_path):
    tmux = shutil.which('tmux')
    if tmux is None:
        message = 'tmux not found: apt-get install tmux'
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    term = Terminal(tmux, str(tmp_path))
    yield term
    term.close()


def fcgi_top(sup, *args):
    return ' '.join(shlex.quote(a) for a in [
        sys.executable, '-m', 'supervisor.supervisorctl', '-c', sup.conf_path,
        'fcgi_top'] + list(args))


def pool_rate(screen):
    """(requests, requests/s) of the pool header, rate None while '-'."""
    match = re.search(r'requests (\d+) \(([-\d.]+)/s\)', screen)
    assert match, screen
    return int(match.group(1)), None if match.group(2) == '-' else float(match.group(2))


def worker_rows(screen):
    """{pid: words of its row}."""
    return {int(line.split()[1]): line.split() for line in screen.splitlines()
            if re.match(r'app_\d\d +\d+ ', line)}


def test_fcgi_top_live_rates_sort_narrow_and_quit(supervisor_factory, terminal):
    sup = supervisor_factory([PoolSpec(numprocs=3)])
    url = sup.pool('app').socket_url
    long_request(url, LONG_URI)
    traffic = Traffic(url)
    try:
        pids = set(sup.pids('app').values())
        terminal.type(fcgi_top(sup, '-d', '0.5'), 'Enter')
        first = terminal.wait(lambda s: 'fcgi_top' in s and set(worker_rows(s)) == pids,
                              15, 'a row for every worker')
        screen = terminal.wait(lambda s: pool_rate(s)[1] is not None and
                               pool_rate(s)[0] > pool_rate(first)[0], 10, 'a rate')
        count, rate = pool_rate(screen)
        assert rate > 1
        later = terminal.wait(lambda s: pool_rate(s)[0] > count, 10, 'the count to move')
        assert pool_rate(later)[1] > 1
        rows = worker_rows(later)
        header = [l for l in later.splitlines() if l.startswith('NAME')][0].split()
        assert header == ['NAME', 'PID', 'STATE', 'REQS', 'REQ/S', 'DUR', 'RSS', 'CPU%',
                          'RESP', 'REQUEST']
        assert any(r[-2:] == ['GET', LONG_URI] for r in rows.values())
        busy = [pid for pid, r in rows.items() if r[-1] == LONG_URI][0]

        terminal.type('d')
        screen = terminal.wait(lambda s: 'sort: duration' in s, 5, 'sorted by duration')
        first_row = [l for l in screen.splitlines() if re.match(r'app_\d\d ', l)][0]
        assert int(first_row.split()[1]) == busy        # the 30 s request leads
        terminal.type('r')
        screen = terminal.wait(lambda s: 'sort: requests' in s, 5, 'sorted by requests')
        counts = [int(r[3]) for r in (l.split() for l in screen.splitlines()
                                      if re.match(r'app_\d\d ', l))]
        assert counts == sorted(counts, reverse=True)

        terminal.tmux('resize-window', '-t', 'top', '-x', '40')
        narrow = terminal.wait(lambda s: 'REQ/S' not in s and 'NAME' in s, 5, 'columns dropped')
        assert max(len(l) for l in narrow.splitlines()) <= 40
        assert set(worker_rows(narrow)) == pids
        terminal.tmux('resize-window', '-t', 'top', '-x', '120')

        terminal.type('q')
        terminal.prompt_back()
    finally:
        traffic.stop()


def test_fcgi_top_says_supervisord_is_gone_reconnects_and_quits_when_it_hangs(
        terminal, tmp_path):
    sup = Supervisor([PoolSpec(numprocs=2)], workdir=str(tmp_path / 'sup'))
    sup.start()
    try:
        terminal.type(fcgi_top(sup, '-d', '0.3'), 'Enter')
        pids = set(sup.pids('app').values())
        terminal.wait(lambda s: set(worker_rows(s)) == pids, 15, 'the rows')
        sup.stop()
        screen = terminal.wait(lambda s: 'cannot reach supervisord' in s, 10,
                               'the screen to say supervisord is gone')
        assert set(worker_rows(screen)) == pids          # the last figures stay
        sup.start()                                      # the same port again
        new_pids = set(sup.pids('app').values())
        terminal.wait(lambda s: 'reconnected' in s and set(worker_rows(s)) == new_pids,
                      15, 'reconnected with the new workers')
        os.kill(sup.pid, signal.SIGSTOP)                 # answers nothing now
        try:
            time.sleep(1)
            terminal.type('q')
            terminal.prompt_back()
        finally:
            os.kill(sup.pid, signal.SIGCONT)
    finally:
        sup.stop()


def test_fcgi_top_ctrl_c_restores_the_terminal(supervisor_factory, terminal):
    sup = supervisor_factory([PoolSpec(numprocs=1)])
    terminal.type(fcgi_top(sup), 'Enter')
    terminal.wait(lambda s: set(worker_rows(s)) == set(sup.pids('app').values()), 15,
                  'the rows')
    terminal.type('C-c')
    terminal.prompt_back()


def test_fcgi_top_unknown_pool_and_bad_option_are_one_line(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=1)])
    result = sup.ctl('fcgi_top', 'nope')
    assert (result.returncode, result.stdout) == (4, 'nope: ERROR (no such pool)\n')
    result = sup.ctl('fcgi_top', '-d', 'soon')
    assert result.returncode == 2
    assert result.stdout.splitlines()[0] == \
        "Error: -d needs seconds from 0.1 to 3600, not 'soon'"


def test_fcgi_top_batch_prints_plain_screens(supervisor_factory):
    sup = supervisor_factory([PoolSpec(numprocs=2)])
    url = sup.pool('app').socket_url
    traffic = Traffic(url)
    try:
        result = sup.ctl('fcgi_top', '--batch', '3', '-d', '0.5', 'app')
    finally:
        traffic.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    screens = result.stdout.split('fcgi_top  ')[1:]
    assert len(screens) == 3
    assert 'no rate yet' in screens[0]
    rates = [pool_rate(s) for s in screens]
    assert rates[0][1] is None and rates[1][1] > 1 and rates[2][1] > 1
    assert rates[0][0] < rates[1][0] < rates[2][0]
    assert all(set(worker_rows(s)) == set(sup.pids('app').values()) for s in screens)
    assert '\x1b' not in result.stdout          # plain text, no terminal codes
    piped = sup.ctl('fcgi_top')                  # not a terminal: one screen
    assert piped.returncode == 0 and piped.stdout.count('fcgi_top  ') == 1
    assert 'no rate yet' in piped.stdout and '\x1b' not in piped.stdout
