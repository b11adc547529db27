"""Per-pool figures: what a pool looks like now, and what must be remembered
between looks (highest queue seen, counts of workers that have exited,
baselines taken by a reset).

Each look gathers the facts once (`readings.gather`: listener, slots,
connections, process states) and computes from them (`poolstatus`), so this
module only keeps the memory.  The figures come from two places and every
one says which:

- ``exact``: the scoreboard slot a cooperating worker writes;
- ``sampled``: connections seen held by a worker at the socket level, for
  workers that do not write a slot (any language).  A connection shorter than
  the sampling interval can be missed.
"""

import collections
import time

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import (durations, loophook, poolstatus, readings,
                                             slots, tcpconns)
from supervisor_fcgi_ext.supervisord.slotcache import SlotCache
from supervisor_fcgi_ext.supervisord.statusmemo import StatusMemo
from supervisor_fcgi_ext.supervisord.stops import StopWatch
from supervisor_fcgi_ext.supervisord.lifecycle import Lifecycle
from supervisor_fcgi_ext.supervisord.readings import UNKNOWN, running

__all__ = ['ProcessView', 'PoolView', 'PoolMonitor', 'UNKNOWN', 'running']

ProcessView = collections.namedtuple('ProcessView', 'name pid state start')
ProcessView.__doc__ = """One process of a pool; pid 0 when not running."""

# The samples of one pass at every pool (one loophook call) share a TCP dump.
TCP_DUMPS = tcpconns.TcpDumps()

PoolView = collections.namedtuple(
    'PoolView', 'name url backlog sock processes held')
PoolView.__doc__ = """A pool as supervisor has it now.

sock is the listening socket object, or None while the socket is closed;
held says the plugin keeps it open while no worker runs."""


class PoolMonitor:
    """The memory of one pool between samples; figures since start or reset."""

    def __init__(self, name, scoreboard_dir=None, clock=time.time, logger=None):
        self.name = name
        self.scoreboard_dir = scoreboard_dir
        self.clock = clock
        self.logger = logger
        self.guard_counts = collections.Counter()
        # the connections each worker held at the last sample; kept across a
        # reset, since a connection held then is not a new one
        self.last_seen_inodes = {}
        self.verdicts = {}          # sockstats' unix verdicts of the last look
        self.logged_limits = set()
        self.looks = 0
        self.quiet = False
        self.lifecycle = Lifecycle()
        # each live worker's slot fd, kept open: `close` before a reload
        self.slot_cache = SlotCache(scoreboard_dir, name) if scoreboard_dir else None
        self.stops = StopWatch()
        self.memo = StatusMemo()    # the last status's parts, given again while unchanged
        self._reset_state({})

    def _reset_state(self, slots_read):
        self.start_time = self.clock()
        self.max_listen_queue = 0
        self.max_active_processes = 0
        self.retired = {source: [0, 0] for source in scoreboard.SOURCES}
        self.retired_durations = durations.EMPTY
        # counters a live worker already had at reset time
        self.baselines = {pid: (slot.accepted_conn, slot.requests, durations.of_slot(slot))
                          for pid, slot in slots_read.items()
                          if isinstance(slot, scoreboard.Slot)}
        self.sampled_counts = collections.Counter()

    def reset(self, view):
        """Start all counters afresh, as PHP-FPM does on a new pool."""
        found = {}
        pids = [p.pid for p in running(view)]
        if self.slot_cache is not None and pids:
            found = self.slot_cache.read(pids)
        self._reset_state(found)
        self.guard_counts.clear()
        self.lifecycle.reset()

    def record(self, counter, process=None):
        """Count what fcgi-guard did (slow_requests, terminated_requests),
        and to which process (a terminated request is a guard kill)."""
        self.guard_counts[counter] += 1
        if process is not None and counter == 'terminated_requests':
            self.lifecycle.count(process, 'guard_kills')
        return self.guard_counts[counter]

    def record_recycle(self, process):
        """fcgi-guard stopped ``process`` past its --max-requests."""
        return self.lifecycle.count(process, 'recycles')

    # -- looks -------------------------------------------------------------

    def _look(self, view, states):
        """Gather the facts, remember what a look must (peaks, connections
        seen), log a bound hit for the first time."""
        self.looks += 1
        current = None if states else loophook.current_call()   # a status reads afresh
        facts = readings.gather(view, self.scoreboard_dir, self.verdicts, states,
                                turn=self.looks,
                                cache=self.slot_cache, tcp_dumps=(TCP_DUMPS, current),
                                stopped=self.stops.frozen)
        self.verdicts = facts.verdicts
        for pid, inodes in facts.held.items():
            new = inodes - self.last_seen_inodes.get(pid, frozenset())
            self.sampled_counts[pid] += len(new)
            self.last_seen_inodes[pid] = inodes
        self.max_listen_queue = max(self.max_listen_queue, facts.listener.queue)
        active = len(facts.busy)
        self.max_active_processes = max(self.max_active_processes, active)
        for limit in facts.limits:
            if limit not in self.logged_limits and self.logger is not None:
                self.logger.warn('fcgi: pool %s: connections unavailable: %s'
                                 % (self.name, limit))
            self.logged_limits.add(limit)
        self.quiet = (active == 0 and facts.listener.queue <= 0 and not facts.unavailable
                      and not any(facts.held.values())
                      and not (self.slot_cache is not None and self.slot_cache.changed))
        return facts

    def sample(self, view):
        """Record peaks and sampled connections; bounded for every tick.
        True when the look was quiet: nothing busy, queued or held, no slot
        changed since the last look (the sampling may rest, see loophook)."""
        self._look(view, states=False)
        return self.quiet

    def close(self):
        """Close the slot fds kept (the pool is gone, or supervisord reloads)."""
        if self.slot_cache is not None:
            self.slot_cache.close()

    def status(self, view):
        """The pool dict of fcgi.getPoolStatus."""
        facts = self._look(view, states=True)
        memory = poolstatus.Memory(
            self.start_time, self.max_listen_queue, self.max_active_processes,
            self.retired, self.baselines, self.sampled_counts, self.guard_counts,
            self.retired_durations, self.lifecycle)
        return poolstatus.pool_status(view, facts, memory, self.clock(), self.memo)

    def process_started(self, name):
        self.lifecycle.started(name)

    def process_exited(self, pid, name=None, how='stopped'):
        """Keep an exited worker's counts in the pool totals; count how it
        ended (``how``: stopped, expected or unexpected) for process ``name``.
        An exit of its own after max_requests requests is a recycle."""
        base_accepted, base_requests, base_durations = self.baselines.pop(
            pid, (0, 0, durations.EMPTY))
        slot = None
        if self.slot_cache is not None:
            self.slot_cache.forget(pid)
        self.stops.forget(pid)
        if self.scoreboard_dir:
            slot = slots.harvest_slot(self.scoreboard_dir, self.name, pid)
        if slot is not None:
            self.retired['exact'][0] += max(0, slot.accepted_conn - base_accepted)
            self.retired['exact'][1] += max(0, slot.requests - base_requests)
            self.retired_durations = durations.add(
                self.retired_durations, durations.since(durations.of_slot(slot),
                                                        base_durations))
        if name is not None:
            if how == 'unexpected':
                self.lifecycle.count(name, 'unexpected_exits')
            elif how == 'expected' and slot is not None and slot.max_requests \
                    and slot.requests >= slot.max_requests:
                self.lifecycle.count(name, 'recycles')
        sampled = self.sampled_counts.pop(pid, 0)
        self.retired['sampled'][0] += sampled
        self.retired['sampled'][1] += sampled
        self.last_seen_inodes.pop(pid, None)
