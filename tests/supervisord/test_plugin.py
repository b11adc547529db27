"""The plugin's one state: its fds end before supervisord's reload closes
fds, its sweep is bounded, and it removes only the pool directories it made.
supervisor's dummies, real timerfds, real directories."""
import os
import time

import pytest
from supervisor import events
from supervisor.medusa import asyncore_25 as asyncore

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import boarddir, plugin
from supervisor_fcgi_ext.supervisord.loophook import LoopHook, timerfd
from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
from supervisor_fcgi_ext.common.scoreboard import MARKER
from supervisor_fcgi_ext.supervisord.slots import StaleSweep, ensure_pool_dir
from test_rpcinterface import make_supervisord
from pluginstate import forget_plugins


@pytest.fixture
def make():
    events.clear()

    def make(**config):
        config.setdefault('scoreboard_dir', 'none')
        return make_fcgi_rpcinterface(make_supervisord(), **config).plugin
    yield make
    forget_plugins()


def test_stopping_closes_the_hooks_before_a_reload_closes_fds(make):
    p = make()
    p.stepper = LoopHook(lambda: None, 0, p.logger)    # a rolling restart's
    hook, stepper = p.hook, p.stepper
    numbers = [hook.fd, stepper.fd]
    assert all(asyncore.socket_map.get(n) in (hook, stepper) for n in numbers)
    events.notify(events.SupervisorStoppingEvent())
    assert not any(asyncore.socket_map.get(n) in (hook, stepper) for n in numbers)
    os.closerange(hook.fd, hook.fd + 1)          # supervisord's cleanup_fds
    other = os.dup2(timerfd(0.01), hook.fd)      # a timerfd gets our number
    try:
        time.sleep(0.03)
        assert not hook.readable()
        hook.handle_read_event()
        hook.close()
        assert int.from_bytes(os.read(other, 8), 'little') >= 1   # not read, open
    finally:
        os.close(other)
    assert (p.hook, p.stepper) == (None, None)


def test_sweeps_close_their_directories_when_supervisord_stops(make, tmp_path):
    p = make(scoreboard_dir=str(tmp_path), sample_interval='60')
    ensure_pool_dir(str(tmp_path), 'app')
    for pid in (1, 2):
        open(tmp_path / 'app' / ('%d.slot' % pid), 'w').close()
    p.samples = plugin.STALE_SLOT_SWEEP - 1
    sweep = p.sweeps['app'] = StaleSweep(str(tmp_path), 'app', p.logger, batch=1)
    p.sample_all()                                  # a sweep begins, one entry
    assert sweep.running
    events.notify(events.SupervisorStoppingEvent())
    assert not sweep.running and p.sweeps == {}


def test_a_removed_pool_takes_only_what_the_plugin_made(make, tmp_path):
    p = make(scoreboard_dir=str(tmp_path))
    ours = ensure_pool_dir(str(tmp_path), 'app')
    open(os.path.join(ours, '12.slot'), 'w').close()
    open(os.path.join(ours, 'notes.txt'), 'w').close()
    p.sample_all()                                  # app is monitored
    del p.supervisord.process_groups['app']          # `update` removed it
    p.sample_all()
    assert sorted(os.listdir(ours)) == ['notes.txt']
    assert any('pool app removed; its scoreboard directory stays: %s holds files the '
               'plugin did not make' % ours in line for line in p.logger.data)
    os.unlink(os.path.join(ours, 'notes.txt'))
    os.rmdir(ours)


def test_a_configured_dir_is_left_as_it_is(make, tmp_path):
    os.chmod(tmp_path, 0o1777)
    make(scoreboard_dir=str(tmp_path))
    assert oct(os.stat(tmp_path).st_mode & 0o7777) == '0o1777'
    assert os.environ[scoreboard.ENV_VAR] == str(tmp_path)


def test_auto_is_this_processes_board_and_names_its_owner_once_running(
        make, tmp_path, monkeypatch):
    root = str(tmp_path)
    monkeypatch.setattr(boarddir, 'default_root', lambda: root)
    try:
        p = make(scoreboard_dir='auto')
        assert p.scoreboard_dir == p.board.path == os.environ[scoreboard.ENV_VAR]
        assert os.path.dirname(p.board.path) == root
        p.board.owner = -1
        events.notify(events.SupervisorRunningEvent())
        assert p.board.owner == os.getpid()
        assert os.listdir(p.board.path) == [boarddir.LOCK_NAME]
        ensure_pool_dir(p.board.path, 'app')
        assert sorted(os.listdir(os.path.join(p.board.path, 'app'))) == [MARKER]
    finally:
        boarddir._auto.pop(root, None)


def test_a_reloaded_supervisord_drops_the_previous_plugin(make):
    first = make()
    second = make()          # a reload: a new supervisord object
    assert second is not first
    assert list(plugin._plugins.values()) == [second]
    assert plugin.get_plugin(second.supervisord, second.settings) is second


def test_pool_monitors_log_through_supervisords_logger(make):
    """A bound hit in a pool's readings is logged once, in supervisord's log."""
    p = make()
    group = p.supervisord.process_groups['app']
    assert p.monitor(group).logger is p.logger
