"""Every pool's process manager and socket hold limit, for the plugin.

The settings are read again from [rpcinterface:fcgi] at every factory call.
What `fcgi.setPoolSize` set is kept by pool name for the life of the
supervisord process: a reload makes a new supervisord object, plugin and
groups, and an `update` new groups, but the size stays.  Pools are matched
to their keys by name case-insensitively: supervisor hands the keys over
lowercased.
"""

import time

from supervisor.states import ProcessStates

from supervisor_fcgi_ext.supervisord import procmanager
from supervisor_fcgi_ext.supervisord.poolsize import PoolSizer

__all__ = ['PoolManagers', 'SizeOutOfRange', 'RUNTIME_SIZES']


# pool name: n given to setPoolSize; kept across reloads (see above)
RUNTIME_SIZES = {}


class SizeOutOfRange(ValueError):
    """setPoolSize's n outside 0..numprocs; the message states the range."""


class PoolManagers:
    def __init__(self, logger, holds, clock=time.time):
        self.logger = logger
        self.holds = holds       # the plugin's SocketHolds
        self.clock = clock
        self.settings = {}       # lowercased pool name: PmSettings
        self.sizers = {}         # pool name: PoolSizer
        self.hold_timeout = procmanager.DEFAULT_HOLD_TIMEOUT
        self.workerless = {}     # pool name: since when it has no RUNNING worker
        self.released = set()    # pools whose hold we let go (logged once)

    def configure(self, pm_settings, hold_timeout, groups):
        """Check the pm keys against the pools (ValueError: one line naming
        the key) and apply them; `groups` are supervisord.process_groups."""
        by_lower = {name.lower(): group for name, group in groups.items()}
        for pool, settings in pm_settings.items():
            group = by_lower.get(pool)
            key = '[rpcinterface:fcgi] %s.pm' % pool
            if group is None:
                raise ValueError('%s: there is no group %r' % (key, pool))
            if getattr(group, 'socket_manager', None) is None:
                raise ValueError('%s: %s is not an [fcgi-program:x] group'
                                 % (key, group.config.name))
            procmanager.check_pool_settings(pool, settings, len(group.processes))
        self.settings = dict(pm_settings)
        self.hold_timeout = hold_timeout
        for name, sizer in self.sizers.items():
            sizer.settings = self.settings_of(name)

    def settings_of(self, name):
        return self.settings.get(name.lower(), procmanager.PmSettings())

    def sizer(self, group):
        name = group.config.name
        sizer = self.sizers.get(name)
        if sizer is None:
            sizer = self.sizers[name] = PoolSizer(
                name, self.settings_of(name), len(group.processes), self.logger,
                self.clock)
            if name in RUNTIME_SIZES:
                sizer.set_size(min(RUNTIME_SIZES[name], len(group.processes)))
        return sizer

    def prepare(self, group):
        """A new group, before supervisor's first pass autostarts it; an
        ondemand pool's socket opens now, and stays open with no worker."""
        try:
            sizer = self.sizer(group)
            sizer.keep_from_autostart(group)
            self._hold_ondemand(group, sizer)
        except Exception as e:   # supervisord goes on (it may autostart more)
            self.logger.error('fcgi: process manager of %s not prepared: %r'
                              % (group.config.name, e))

    def _hold_ondemand(self, group, sizer):
        if sizer.settings.pm == 'ondemand' and not sizer.paused \
                and self.clock() >= sizer.backoff_until \
                and not self.holds.is_holding(group.config.name):
            self.holds.hold(group, open_socket=True)

    def forget(self, name):
        sizer = self.sizers.pop(name, None)
        if sizer is not None:
            sizer.close()
        self.workerless.pop(name, None)
        self.released.discard(name)

    def close_all(self):
        """supervisord stops or reloads: no activation outlives the loop."""
        for sizer in self.sizers.values():
            sizer.close()

    # -- from the sampling hook --------------------------------------------

    def step(self, group, scoreboard_dir, restarting, mood):
        """The pool's manager and hold limit; True when nothing goes on."""
        sizer = self.sizer(group)
        quiet = sizer.step(group, scoreboard_dir, restarting, mood)
        try:
            self._limit_hold(group, sizer)
            self._hold_ondemand(group, sizer)
        except Exception as e:
            self.logger.error('fcgi: hold limit of %s failed: %r'
                              % (group.config.name, e))
        return quiet   # resting, the hook still calls about once a second

    def _limit_hold(self, group, sizer):
        """Let a held socket go once its pool has had no worker for
        hold_timeout; an ondemand pool waiting for connections is exempt."""
        name = group.config.name
        running = any(p.get_state() == ProcessStates.RUNNING
                      for p in group.processes.values())
        idle_by_design = (sizer.settings.pm == 'ondemand' and not sizer.paused
                          and self.clock() >= sizer.backoff_until)
        if running or idle_by_design or not self.hold_timeout:
            self.workerless.pop(name, None)
            self.released.discard(name)
            return
        since = self.workerless.setdefault(name, self.clock())
        if self.holds.is_holding(name) and self.clock() - since >= self.hold_timeout:
            self.holds.release(name)
            if name not in self.released:
                self.released.add(name)
                self.logger.warn(
                    'fcgi: %s has had no running worker for %gs (hold_timeout): '
                    'its socket is no longer held, connections are refused '
                    'until a worker runs' % (name, self.hold_timeout))

    # -- fcgi.setPoolSize and the status dict ---------------------------------

    def set_size(self, group, n):
        numprocs = len(group.processes)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= numprocs:
            raise SizeOutOfRange(
                '%s: n must be a whole number from 0 to %d (its numprocs), not '
                '%r; more than numprocs needs numprocs raised and supervisorctl '
                'update' % (group.config.name, numprocs, n))
        sizer = self.sizer(group)
        sizer.bind(group)
        sizer.set_size(n)
        RUNTIME_SIZES[group.config.name] = n
        self.logger.info('fcgi: %s: pool size set to %d (pm %s)'
                         % (group.config.name, n, sizer.settings.pm))
        return sizer.status()

    def status(self, group):
        sizer = self.sizer(group)
        sizer.bind(group)
        return sizer.status()
