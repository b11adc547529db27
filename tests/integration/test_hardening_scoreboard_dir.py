"""Issue 11 items 4 and 6: a configured scoreboard_dir.

supervisord refuses one it must not use (the root, a relative path, a
symlink, another user's directory, one anybody can write in) with one line
naming the key, the value and what is allowed; in one it uses, the plugin
changes or removes only what it made itself.  Real supervisord, real files,
temp dirs only.
"""
import os
import pwd
import stat
import subprocess
import sys
import time

import pytest

from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.common.scoreboard import MARKER

SLEEPER = PoolSpec(command='sleep 1000', numprocs=1)


def run_refused(value):
    """supervisord's exit status and its lines that give our reason (supervisor
    logs the traceback at WARN, then prints its own 'Error: ...' line)."""
    sup = Supervisor([SLEEPER], plugin_options={'scoreboard_dir': value})
    try:
        sup.write_config()
        result = subprocess.run([sys.executable, '-m', 'supervisor.supervisord', '-n',
                                 '-c', sup.conf_path], capture_output=True, text=True,
                                timeout=30, cwd=sup.workdir)
    finally:
        sup._cleanup()
    output = result.stdout + result.stderr
    assert 'Error: Could not make fcgi rpc interface' in result.stderr
    lines = [line for line in output.splitlines()
             if line.startswith('ValueError: [rpcinterface:fcgi]')]
    return result.returncode, lines


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def made(tmp_path, name, mode_bits, owner=None):
    path = tmp_path / name
    path.mkdir()
    os.chmod(path, mode_bits)
    if owner is not None:
        os.chown(path, pwd.getpwnam(owner).pw_uid, -1)
    return str(path)


@pytest.mark.parametrize('kind', ['root', 'slashes', 'relative', 'symlink', 'others',
                                  'world-writable'])
def test_supervisord_refuses_a_scoreboard_dir_it_must_not_use(tmp_path, kind):
    if kind == 'others' and os.geteuid() != 0:
        pytest.skip('a directory of another user needs root to make')
    root_mode = mode('/')
    target = made(tmp_path, 'target', 0o755)
    value, reason = {
        'root': ('/', None),
        'slashes': ('//', None),
        'relative': ('board', None),
        'symlink': (str(tmp_path / 'link'), 'it is a symlink'),
        'others': (made(tmp_path, 'theirs', 0o755, 'nobody'),
                   'it is owned by uid %d, not 0' % pwd.getpwnam('nobody').pw_uid),
        'world-writable': (made(tmp_path, 'open', 0o777),
                           'anybody can write in it (mode 777, no sticky bit)'),
    }[kind]
    os.symlink(target, tmp_path / 'link')
    status, lines = run_refused(value)
    assert status == 2
    assert len(set(lines)) == 1, lines        # the same line in log and output
    line = lines[0]
    assert line.startswith("ValueError: [rpcinterface:fcgi] scoreboard_dir = %r is refused"
                           % value)
    if reason:
        assert ': %s (allowed: auto, none, or an absolute path' % reason in line
    assert mode('/') == root_mode and mode(target) == 0o755
    if kind == 'world-writable':
        assert mode(value) == 0o777


def test_the_plugin_changes_and_removes_only_what_it_made(supervisor_factory, tmp_path):
    board = made(tmp_path, 'board', 0o1777)
    theirs = os.path.join(board, 'app')      # named like a pool, not the plugin's
    os.mkdir(theirs)
    os.chmod(theirs, 0o755)
    with open(os.path.join(theirs, 'data.txt'), 'w') as f:
        f.write('precious')
    sup = supervisor_factory([SLEEPER, PoolSpec(name='web', command='sleep 1000',
                                                numprocs=1)],
                             plugin_options={'scoreboard_dir': board,
                                             'sample_interval': '0.1'})
    ours = os.path.join(board, 'web')
    assert sorted(os.listdir(ours)) == [MARKER] and mode(ours) == 0o700
    assert mode(board) == 0o1777 and mode(theirs) == 0o755
    log = open(sup.log_path).read()
    assert 'fcgi: no scoreboard for app_00: pool directory %s was not made by the ' \
           'plugin: left as it is, no scoreboard' % theirs in log
    # the sweep takes a stale slot from our directory, nothing else anywhere
    for directory in (ours, theirs):
        for name in ('999999999.slot', 'notes.txt'):
            with open(os.path.join(directory, name), 'w') as f:
                f.write('x')
    sup.wait_for(lambda: not os.path.exists(os.path.join(ours, '999999999.slot')),
                 15, 'a sweep')
    assert sorted(os.listdir(theirs)) == ['999999999.slot', 'data.txt', 'notes.txt']
    assert sorted(os.listdir(ours)) == [MARKER, 'notes.txt']
    # `update` removes both pools: only our slot files and marker go
    sup.pools = []
    sup.write_config()
    assert sup.ctl('update').returncode == 0
    sup.wait_for(lambda: 'pool app removed' in open(sup.log_path).read()
                 and 'pool web removed' in open(sup.log_path).read(), 5, 'the removals')
    time.sleep(0.3)
    log = open(sup.log_path).read()
    assert 'pool web removed; its scoreboard directory stays: %s holds files the ' \
           'plugin did not make' % ours in log
    assert 'pool app removed; its scoreboard directory stays: %s was not made by the ' \
           'plugin' % theirs in log
    assert os.listdir(ours) == ['notes.txt']
    assert sorted(os.listdir(theirs)) == ['999999999.slot', 'data.txt', 'notes.txt']
    assert open(os.path.join(theirs, 'data.txt')).read() == 'precious'
    assert mode(board) == 0o1777 and mode(theirs) == 0o755
