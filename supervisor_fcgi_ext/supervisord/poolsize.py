"""Starts and stops a pool's workers as its process manager decides.

The adapter between `procmanager` (pure decisions) and supervisor's own
process objects, in the manner of `rolling`: a worker is started with the
process's spawn() and stopped with its stop() (the graceful stop signal:
the request in flight finishes); only the pool's own numprocs process
objects are ever used, so no worker runs outside numprocs.

Which stopped processes are the manager's: those it stopped itself, and
those it kept from supervisor's autostart (a dynamic pool starts
start_servers of its numprocs, an ondemand pool none: their `laststart`
is set, which is what supervisor reads to tell "stopped" from "never
started"; no config is touched).  A process stopped by anyone else
(`supervisorctl stop app:*`) is theirs: the manager never starts it, and a
pool with no live worker and such a process is paused until someone starts
one (`start app:*`).  A worker the manager started that ends in BACKOFF or
FATAL makes it start nothing more for a while, logged once.

`PoolSizer.step` runs from the plugin's sampling hook, `activate` from
socket activation; neither raises.
"""

import time

from supervisor.datatypes import RestartUnconditionally
from supervisor.states import ProcessStates, SupervisorStates

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import procmanager, slots, sockstats
from supervisor_fcgi_ext.supervisord.activation import Activation

__all__ = ['PoolSizer', 'classify', 'BACKOFF_FIRST', 'BACKOFF_MAX', 'START_GRACE']

BACKOFF_FIRST = 5.0    # seconds without starts after a failed start
BACKOFF_MAX = 60.0     # doubling up to this while starts keep failing
# A worker with no slot yet may still be loading its app and writing its
# slot: this long after its start it counts as starting, not busy, so a
# waiting connection does not start a second worker at once.
START_GRACE = 1.0

_UP = {ProcessStates.STARTING: 'starting', ProcessStates.BACKOFF: 'starting',
       ProcessStates.RUNNING: 'running', ProcessStates.STOPPING: 'stopping'}
_STARTED = (ProcessStates.STARTING, ProcessStates.RUNNING, ProcessStates.BACKOFF)


def classify(process, slot, quiet_since, now):
    """The procmanager.Worker of a live process, None for a stopped one.

    A worker that writes a slot says exactly whether it is idle and since
    when; one that does not is idle since the pool last had no connection
    (`quiet_since`; None while the pool has connections) - socket level.
    """
    state = _UP.get(process.get_state())
    if state is None:
        return None
    name = process.config.name
    if state != 'running':
        return procmanager.Worker(name, state, process.laststart)
    if isinstance(slot, scoreboard.Slot):
        if slot.state == 'starting':
            return procmanager.Worker(name, 'starting', slot.start_time)
        if slot.state in scoreboard.BUSY_STATES:
            if 1 < slot.threads and slot.active < slot.threads:
                # a threaded worker with a free thread takes one more
                return procmanager.Worker(name, 'idle', now)
            return procmanager.Worker(name, 'busy', slot.request_start)
        ended = slot.request_start + slot.last_request_duration_us / 1e6
        return procmanager.Worker(name, 'idle', max(ended, slot.start_time))
    if quiet_since is None:
        fresh = now - process.laststart < START_GRACE
        return procmanager.Worker(name, 'starting' if fresh else 'busy',
                                  process.laststart)
    return procmanager.Worker(name, 'idle', max(quiet_since, process.laststart))


class PoolSizer:
    """The process manager of one pool, bound to its current group."""

    def __init__(self, name, settings, numprocs, logger, clock=time.time):
        self.name = name
        self.settings = settings
        self.logger = logger
        self.clock = clock
        self.state = procmanager.PmState(ceiling=numprocs, target=numprocs)
        self.numprocs = numprocs
        self.resized = False     # setPoolSize was called
        self.group = None
        self.held = set()        # process names the manager keeps stopped
        self.pending = set()     # started by the manager, not RUNNING yet
        self.spawns = 0
        self.stops = 0
        self.backoff_until = 0.0
        self.backoff = 0.0
        self.failing = False     # logged; quiet until a start succeeds
        self.quiet_since = clock()
        self.paused = False
        self.activation = None

    @property
    def managed(self):
        """A static pool never resized is left to supervisor alone."""
        return self.settings.pm != 'static' or self.resized

    # -- binding to supervisor's group ---------------------------------------

    def bind(self, group):
        """Follow a group `update` or a reload replaced; keep the settings
        and what setPoolSize set."""
        if group is self.group:
            return
        self.close()
        self.group = group
        self.held.clear()
        self.pending.clear()
        self.numprocs = len(group.processes)
        if self.resized:
            self.state.ceiling = min(self.state.ceiling, self.numprocs)
            self.state.target = min(self.state.target, self.numprocs)
        else:
            self.state.ceiling = self.state.target = self.numprocs

    def keep_from_autostart(self, group):
        """Before supervisor's first pass over a new group (a start, a
        reload, an update): let it autostart only what the manager would
        run - start_servers, none on demand, a resized static pool's n."""
        self.bind(group)
        if not self.managed:
            return
        wanted = {'static': self.state.target, 'ondemand': 0,
                  'dynamic': self.settings.start_servers}[self.settings.pm]
        fresh = [p for name, p in sorted(group.processes.items())
                 if p.get_state() == ProcessStates.STOPPED and not p.laststart
                 and p.config.autostart]
        now = self.clock()
        for process in fresh[min(wanted, self.state.ceiling):]:
            # supervisor autostarts a STOPPED process only if laststart is 0
            process.laststart = process.laststop = now
            self.held.add(process.config.name)

    # -- the step ----------------------------------------------------------

    def step(self, group, scoreboard_dir, restarting, mood):
        """One look at the pool and what the manager does about it; True
        when it has nothing going on (the sampling hook may rest)."""
        try:
            self.bind(group)
            if not self.managed:
                return True
            return self._step(scoreboard_dir, restarting, mood)
        except Exception as e:   # never into supervisord's loop
            self.logger.error('fcgi: process manager of %s failed: %r'
                              % (self.name, e))
            return False

    def _step(self, scoreboard_dir, restarting, mood):
        now = self.clock()
        processes = sorted(self.group.processes.values(),
                           key=lambda p: p.config.name)
        # a held process someone else started is theirs again
        self.held -= {p.config.name for p in processes
                      if p.get_state() in _STARTED}
        self._check_pending(processes, now)
        sock = self._socket()
        slot_of = self._slots(scoreboard_dir, processes)
        uncooperative = any(p.pid and not isinstance(slot_of.get(p.pid),
                                                      scoreboard.Slot)
                            for p in processes)
        queue, connections = self._socket_figures(sock, uncooperative)
        if connections or queue:
            self.quiet_since = now
        quiet = None if (connections or queue) else self.quiet_since
        workers = [w for w in (classify(p, slot_of.get(p.pid), quiet, now)
                               for p in processes) if w is not None]
        self.paused = self._paused(processes)
        can_start = (not self.paused and mood >= SupervisorStates.RUNNING
                     and now >= self.backoff_until and not restarting)
        candidates = self._candidates(processes) if can_start else []
        others_stopping = any(p.get_state() == ProcessStates.STOPPING
                              and p.config.name not in self.held
                              for p in processes)
        figures = procmanager.Figures(workers, len(candidates), queue)
        decision = procmanager.decide(
            self.settings, self.state, figures, now,
            may_stop=not (restarting or others_stopping or self.paused))
        self._start(candidates[:decision.start], now)
        for name in decision.stop:
            self._stop(self.group.processes[name])
        staying = [w for w in workers
                   if w.state != 'stopping' and w.name not in decision.stop]
        self._arm(sock, bool(staying) or bool(decision.start), can_start,
                  candidates)
        return not (decision.start or decision.stop or self.pending or queue)

    def _paused(self, processes):
        """Stopped by someone else (supervisorctl stop app:*, or never
        started with autostart=false), and nothing runs."""
        return not any(p.get_state() in _STARTED for p in processes) and any(
            p.get_state() in (ProcessStates.STOPPED, ProcessStates.STOPPING)
            and p.config.name not in self.held for p in processes)

    def _socket(self):
        manager = self.group.socket_manager
        return manager.socket if manager.is_prepared() else None

    def _socket_figures(self, sock, uncooperative):
        """(listen queue, connections accepted and not closed); the second
        only matters, and is only looked up, for workers with no slot."""
        if sock is None:
            return 0, 0
        try:
            queue = sockstats.listener_stats(sock).queue
            if not uncooperative:
                return queue, 0
            return queue, len(sockstats.accepted_inodes(sock))
        except sockstats.SocketStatsError:
            return 0, 0

    def _slots(self, scoreboard_dir, processes):
        pids = [p.pid for p in processes if p.pid]
        if not scoreboard_dir or not pids:
            return {}
        return slots.read_pool(scoreboard_dir, self.name, pids)

    def _candidates(self, processes):
        """Stopped processes the manager may start, its own first."""
        own, others = [], []
        for process in processes:
            state = process.get_state()
            if state == ProcessStates.STOPPED and process.config.name in self.held:
                own.append(process)
            elif state == ProcessStates.FATAL or (
                    state == ProcessStates.EXITED
                    and not _supervisor_restarts(process)):
                others.append(process)
        return own + others

    def _check_pending(self, processes, now):
        for process in processes:
            name = process.config.name
            if name not in self.pending:
                continue
            state = process.get_state()
            if state == ProcessStates.RUNNING:
                self.pending.discard(name)
                self.failing = False
                self.backoff = 0.0
            elif state in (ProcessStates.BACKOFF, ProcessStates.FATAL):
                self.pending.discard(name)
                self._back_off(process, now)
            elif state != ProcessStates.STARTING:
                self.pending.discard(name)   # stopped by someone meanwhile

    def _back_off(self, process, now):
        self.backoff = min(BACKOFF_MAX, self.backoff * 2 or BACKOFF_FIRST)
        self.backoff_until = now + self.backoff
        if not self.failing:
            self.failing = True
            self.logger.warn(
                'fcgi: %s: %s could not start (%s: %s); the process manager '
                'starts no worker for %gs, then retries (quietly)'
                % (self.name, process.config.name,
                   'FATAL' if process.get_state() == ProcessStates.FATAL
                   else 'BACKOFF', process.spawnerr or 'exited too quickly',
                   self.backoff))

    def _start(self, processes, now):
        for process in processes:
            name = process.config.name
            self.held.discard(name)
            self.pending.add(name)
            self.spawns += 1
            process.spawn()
            if process.get_state() in (ProcessStates.BACKOFF, ProcessStates.FATAL):
                self.pending.discard(name)
                self._back_off(process, now)
                return

    def _stop(self, process):
        if process.get_state() not in (ProcessStates.RUNNING,
                                       ProcessStates.STARTING):
            return
        self.held.add(process.config.name)
        self.pending.discard(process.config.name)
        self.stops += 1
        process.stop()

    # -- socket activation -------------------------------------------------

    def _arm(self, sock, live, can_start, candidates):
        """Watch the socket while an ondemand pool has no worker but those
        stopping (they accept no more connections)."""
        wanted = (self.settings.pm == 'ondemand' and sock is not None
                  and not live and can_start and bool(candidates))
        if not wanted:
            self.close()
        elif self.activation is None or self.activation.sock is not sock:
            self.close()
            self.activation = Activation(sock, self.activate, self.logger)

    def activate(self):
        """A connection arrived while no worker ran: start one now."""
        try:
            self.close()
            if self.group is None or not self.managed:
                return
            processes = sorted(self.group.processes.values(),
                               key=lambda p: p.config.name)
            candidates = self._candidates(processes)
            if self._paused(processes) or self.clock() < self.backoff_until \
                    or not candidates:
                return
            if not any(p.get_state() in _STARTED for p in processes):
                self._start(candidates[:1], self.clock())
        except Exception as e:
            self.logger.error('fcgi: socket activation of %s failed: %r'
                              % (self.name, e))

    def close(self):
        if self.activation is not None:
            self.activation.close()
            self.activation = None

    # -- fcgi.setPoolSize and status -----------------------------------------

    def set_size(self, n):
        """Static: run n workers; dynamic and ondemand: n is the ceiling."""
        self.resized = True
        self.state.ceiling = self.state.target = n

    def status(self):
        floor, ceiling = procmanager.floor_ceiling(self.settings, self.state)
        processes = list(self.group.processes.values()) if self.group else []
        live = sum(1 for p in processes if p.get_state() in _STARTED)
        target = self.state.target if self.settings.pm == 'static' else live
        state = ('paused' if self._paused(processes) else
                 'backoff' if self.clock() < self.backoff_until else
                 'watching' if self.activation is not None else 'active')
        return {
            'pm': self.settings.pm,
            'pm_state': state if self.managed else 'static',
            'target': target,
            'floor': floor,
            'ceiling': ceiling,
            'max_children_reached': self.state.max_children_reached,
            'spawns': self.spawns,
            'stops': self.stops,
        }


def _supervisor_restarts(process):
    """Will supervisor itself restart this EXITED process?"""
    restart = process.config.autorestart
    if restart is RestartUnconditionally:
        return True
    return bool(restart) and process.exitstatus not in process.config.exitcodes
