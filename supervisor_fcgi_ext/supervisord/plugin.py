"""The plugin's one state inside supervisord.

supervisord calls the rpcinterface factory once per HTTP server section and
again after every reload (after clearing all event subscriptions), so the
state lives here, once per supervisord, and every factory call attaches to it
(`Plugin.attach`) idempotently.

Reading a pool's figures starts here: it turns a process group into a plain
`pools.PoolView` for the pool's `PoolMonitor`, which never sees supervisor's
objects.  The modules that act on supervisor (rolling restarts its
processes, holds takes socket references, rpcinterface looks pools up) use
its objects directly: that is their job.  Every callback from supervisord
catches and logs everything: an exception in an event callback or in the
loop would kill supervisord.

Every fd the plugin keeps across loop passes (the loop hooks, a sweep's
directory) is closed when supervisord stops or reloads: the next start
closes all fds >= 5 (cleanup_fds), and a number reused after that must
never be read or closed as ours.  The automatic scoreboard's lock fd is the
exception: it is a regular file, told from a reused number by its inode.
"""

import os
import time

from supervisor import events
from supervisor.states import SupervisorStates, getProcessStateDescription

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import boarddir, httpserve, slots
from supervisor_fcgi_ext.supervisord.holds import (SocketHolds, kept_open_by_plugin,
                                                   remove_unix_socket_file)
from supervisor_fcgi_ext.supervisord.loophook import LoopHook
from supervisor_fcgi_ext.supervisord.outbuffer import raise_out_buffer
from supervisor_fcgi_ext.supervisord.poolmanagers import PoolManagers
from supervisor_fcgi_ext.supervisord.lifecycle import exit_kind
from supervisor_fcgi_ext.supervisord.rolling import RollingRestart
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView, running
from supervisor_fcgi_ext.supervisord.settings import AUTO

__all__ = ['Plugin', 'get_plugin', 'is_fcgi_group']

# Events after which a worker's pid is gone for good (the pid is still set on
# the process while supervisor notifies).
_EXIT_EVENTS = (events.ProcessStateExitedEvent, events.ProcessStateStoppedEvent,
                events.ProcessStateBackoffEvent)

STALE_SLOT_SWEEP = 60   # samples between sweeps for slots of vanished pids

_plugins = {}


def get_plugin(supervisord, settings):
    """The Plugin of this supervisord, made on first use, attached every call.

    A reload makes a new supervisord object; the old one's Plugin (and the
    groups it still refers to) is dropped rather than kept for good."""
    plugin = _plugins.get(id(supervisord))
    if plugin is None or plugin.supervisord is not supervisord:
        _plugins.clear()
        plugin = _plugins[id(supervisord)] = Plugin(supervisord, settings)
    plugin.attach(settings)
    return plugin


def is_fcgi_group(group):
    """Duck-typed, so supervisor's test dummies count too."""
    return getattr(group, 'socket_manager', None) is not None


class Plugin:
    def __init__(self, supervisord, settings):
        self.supervisord = supervisord
        self.logger = supervisord.options.logger
        self.settings = settings
        self.monitors = {}   # pool name: (group, PoolMonitor)
        self.samples = 0          # sample intervals passed (a resting hook's count several)
        self.sampled_at = None
        self.sweep_due = False
        self.hook = None
        self.web = httpserve.Web(self)   # the /fcgi/ paths
        self.scoreboard_dir = None
        self.board = None          # the AutoBoard with scoreboard_dir = auto
        self.sweeps = {}           # pool name: its StaleSweep
        self.holds = SocketHolds(self.logger)
        self.socket_managers = {}  # pool name: its SocketManager, for removal
        self.restarts = {}         # pool name: its last RollingRestart
        self.stepper = None        # a LoopHook while a restart runs
        self.managers = PoolManagers(self.logger, self.holds)   # pm, hold limits

    def attach(self, settings):
        """Subscribe to events and hook the loop; doing it twice changes nothing."""
        self.settings = settings
        self.managers.configure(settings['pm'], settings['hold_timeout'],
                                self.supervisord.process_groups)
        for group in self.fcgi_groups().values():
            self.managers.prepare(group)   # before supervisor autostarts
        self._prepare_scoreboard(settings['scoreboard_dir'])
        for name, group in self.fcgi_groups().items():
            self.socket_managers[name] = group.socket_manager
        for event_type, callback in ((events.ProcessStateStartingEvent,
                                      self.on_starting),
                                     (events.ProcessStateEvent, self.on_state),
                                     (events.ProcessGroupAddedEvent,
                                      self.on_group_added),
                                     (events.ProcessGroupRemovedEvent,
                                      self.on_group_removed),
                                     (events.SupervisorRunningEvent,
                                      self.on_running),
                                     (events.SupervisorStoppingEvent,
                                      self.on_stopping)):
            if (event_type, callback) not in events.callbacks:
                events.subscribe(event_type, callback)
        # A second factory call (a second HTTP server) samples on one hook.
        self.close_fds()
        self.web.listen(settings['metrics_listen'])
        raise_out_buffer(self.logger)   # every HTTP reply: fewer loop passes
        self.hook = LoopHook(self.sample_all, settings['sample_interval'],
                             self.logger)

    def close_fds(self):
        """Close the hooks, sweeps and kept slot fds, whose fds a reload would
        close behind us."""
        for _, monitor in self.monitors.values():
            monitor.close()
        for hook in (self.hook, self.stepper):
            if hook is not None:
                hook.close()
        self.hook = self.stepper = None
        for sweep in self.sweeps.values():
            sweep.close()
        self.sweeps.clear()

    def _prepare_scoreboard(self, configured):
        """ValueError (the one line supervisord shows) when it cannot be used."""
        if configured == AUTO:
            try:
                self.board = boarddir.auto_board()
            except OSError as e:
                raise ValueError('[rpcinterface:fcgi] scoreboard_dir = auto: cannot '
                                 'make a directory under %s: %s'
                                 % (boarddir.default_root(), scoreboard.os_reason(e)))
            path = self.board.path
        else:
            path = None if configured is None else boarddir.prepare_configured(configured)
        self.scoreboard_dir = path
        if path is None:
            os.environ.pop(scoreboard.ENV_VAR, None)
        else:
            # supervisor copies its own environment for every child it spawns:
            # that is how a worker finds the scoreboard without configuration.
            os.environ[scoreboard.ENV_VAR] = path

    # -- pools -------------------------------------------------------------

    def fcgi_groups(self):
        return {name: group
                for name, group in self.supervisord.process_groups.items()
                if is_fcgi_group(group)}

    def monitor(self, group):
        """The monitor of a group; a group replaced by `update` starts afresh."""
        name = group.config.name
        known = self.monitors.get(name)
        if known is None or known[0] is not group:
            if known is not None:
                known[1].close()
            known = self.monitors[name] = (group, PoolMonitor(name, self.scoreboard_dir,
                                                              logger=self.logger))
        return known[1]

    def view(self, group):
        manager = group.socket_manager
        sock = manager.socket if manager.is_prepared() else None
        processes = [ProcessView(p.config.name, p.pid,
                                 getProcessStateDescription(p.get_state()),
                                 p.laststart)
                     for p in sorted(group.processes.values(),
                                     key=lambda p: p.config.name)]
        config = group.config.socket_config
        return PoolView(group.config.name, config.url, config.get_backlog(),
                        sock, processes, kept_open_by_plugin(group))

    def status(self, group):
        status = self.monitor(group).status(self.view(group))
        status.update(self.managers.status(group))
        return status

    def reset(self, group):
        self.monitor(group).reset(self.view(group))

    # -- rolling restarts ----------------------------------------------------

    def start_restart(self, group, batch):
        """Begin a rolling restart; raises (NotRollable, supervisor's command
        errors) before touching any process when it cannot be done."""
        restart = RollingRestart(self.supervisord, group, batch,
                                 self.scoreboard_dir, self.logger,
                                 only_running=self.managers.sizer(group).managed)
        restart.begin()
        self.restarts[restart.name] = restart
        if self.stepper is None:
            # interval 0: every pass of supervisord's loop, so a replacement
            # starts in the pass after its predecessor was reaped
            self.stepper = LoopHook(self.step_restarts, 0, self.logger)
        return restart

    def running_restart(self, name):
        restart = self.restarts.get(name)
        return restart if restart is not None and restart.state == 'running' \
            else None

    def step_restarts(self):
        running = [r for r in self.restarts.values() if r.state == 'running']
        for restart in running:
            restart.step()
        if not any(r.state == 'running' for r in running):
            self.stepper.close()
            self.stepper = None

    # -- callbacks from supervisord ----------------------------------------

    def sample_all(self):
        groups = self.fcgi_groups()
        for name in list(self.monitors):
            if name not in groups:
                self._forget(name)
        # a resting hook (loophook) samples about once a second: the sweep
        # counts the intervals that passed, not the calls
        now = time.monotonic()
        passed = 1 if self.sampled_at is None else max(
            1, int((now - self.sampled_at) / self.settings['sample_interval'] + 0.5))
        self.sampled_at = now
        self.sweep_due = ((self.samples + passed) // STALE_SLOT_SWEEP
                          > self.samples // STALE_SLOT_SWEEP)
        self.samples += passed
        quiet = True   # every pool: the hook may rest (loophook)
        for group in groups.values():
            try:
                view = self.view(group)
                quiet = self.monitor(group).sample(view) and quiet
                quiet = self.managers.step(
                    group, self.scoreboard_dir,
                    self.running_restart(view.name) is not None,
                    self.supervisord.options.mood) and quiet
                self._sweep(view)
            except Exception as e:
                quiet = False
                self.logger.error('fcgi: sampling pool %s failed: %r'
                                  % (group.config.name, e))
        return quiet

    def _sweep(self, view):
        """Exits are harvested as they happen; this catches slots whose exit
        we never saw (a reload, a missed event): a bounded step every
        STALE_SLOT_SWEEP samples, a pass over a huge directory resuming."""
        if not self.scoreboard_dir or not self.sweep_due:
            return
        sweep = self.sweeps.get(view.name)
        if sweep is None:
            sweep = self.sweeps[view.name] = slots.StaleSweep(
                self.scoreboard_dir, view.name, self.logger)
        sweep.step([p.pid for p in running(view)])

    def _forget(self, name):
        self.monitors.pop(name)[1].close()
        self.managers.forget(name)
        sweep = self.sweeps.pop(name, None)
        if sweep is not None:
            sweep.close()
        if self.scoreboard_dir:
            left = slots.remove_pool_dir(self.scoreboard_dir, name)
            if left:
                self.logger.warn('fcgi: pool %s removed; its scoreboard directory '
                                 'stays: %s' % (name, left))

    def on_starting(self, event):
        """Hold the pool socket, which exists from now on, and make the pool's
        scoreboard directory before the worker forks."""
        try:
            group = event.process.group
            if is_fcgi_group(group) and self.settings['hold_sockets'] \
                    and self.supervisord.options.mood >= SupervisorStates.RUNNING:
                self.holds.hold(group)
        except Exception as e:
            self.logger.error('fcgi: cannot hold the socket of %s: %r'
                              % (event.process.config.name, e))
        try:
            group = event.process.group
            if self.scoreboard_dir and is_fcgi_group(group):
                slots.ensure_pool_dir(self.scoreboard_dir, group.config.name,
                                           event.process.config.uid)
        except Exception as e:
            self.logger.error('fcgi: no scoreboard for %s: %s'
                              % (event.process.config.name, e))

    def on_group_added(self, event):
        """A pool added by `update` opens its socket now rather than at its
        first worker's spawn, a loop pass later: `update` of a changed pool
        refuses connections only between its remove and add calls."""
        try:
            group = self.supervisord.process_groups.get(event.group)
            if is_fcgi_group(group):
                self.socket_managers[event.group] = group.socket_manager
                self.managers.prepare(group)
                if self.settings['hold_sockets'] and any(
                        c.autostart for c in group.config.process_configs):
                    self.holds.hold(group, open_socket=True)
        except Exception as e:
            self.logger.error('fcgi: after adding %s: %r' % (event.group, e))

    def on_group_removed(self, event):
        """Close a removed pool's socket, so a re-added pool can bind the
        address, and remove its unix socket file."""
        name = event.group
        try:
            restart = self.running_restart(name)
            if restart is not None:
                restart.abort('the pool was removed during the restart')
            self.holds.release(name)
            manager = self.socket_managers.pop(name, None)
            if manager is not None and not manager.is_prepared():
                removed = remove_unix_socket_file(manager.config())
                if removed:
                    self.logger.info('fcgi: removed socket file %s of pool %s'
                                     % (removed, name))
        except Exception as e:
            self.logger.error('fcgi: after removing %s: %r' % (name, e))

    def on_running(self, event):
        """supervisord's HTTP servers exist now (again after a reload), and
        it has daemonized: the automatic directory's lock file names the pid
        that owns it from here on."""
        try:
            self.web.install(self.supervisord.options)
        except Exception as e:
            self.logger.error('fcgi: cannot serve /fcgi/ paths: %r' % (e,))
        try:
            if self.board is not None:
                self.board.record_owner()
        except Exception as e:
            self.logger.error('fcgi: cannot record the scoreboard owner: %r' % (e,))

    def on_stopping(self, event):
        """supervisord stops or reloads: let every socket close with its
        workers (a reload binds the same addresses again), and close our fds
        before a reload's cleanup_fds does."""
        try:
            for restart in self.restarts.values():
                restart.abort('supervisord is stopping')
            self.holds.release_all()
            self.managers.close_all()
        except Exception as e:
            self.logger.error('fcgi: releasing sockets failed: %r' % (e,))
        try:
            self.close_fds()
        except Exception as e:
            self.logger.error('fcgi: closing the loop hooks failed: %r' % (e,))

    def on_state(self, event):
        """Keep an exiting worker's final counts in its pool's totals; count
        its starts and how it ended (lifecycle.py)."""
        try:
            process = event.process
            if not is_fcgi_group(process.group):
                return
            if isinstance(event, events.ProcessStateStartingEvent):
                self.monitor(process.group).process_started(process.config.name)
            elif isinstance(event, _EXIT_EVENTS) and process.pid:
                self.monitor(process.group).process_exited(
                    process.pid, process.config.name, exit_kind(event))
        except Exception as e:
            self.logger.error('fcgi: accounting the exit of %s failed: %r'
                              % (event.process.config.name, e))
