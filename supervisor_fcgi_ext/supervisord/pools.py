"""Per-pool figures: what a pool looks like now, and what must be remembered
between looks (highest queue seen, counts of workers that have exited,
baselines taken by a reset).

Everything here works on plain data (`PoolView`), not on supervisor's
objects, so it is tested without supervisord; `rpcinterface` adapts.  The
figures come from two places and every one says which:

- ``exact``: the scoreboard slot a cooperating worker writes;
- ``sampled``: connections seen held by a worker at the socket level, for
  workers that do not write a slot (any language).  A connection shorter than
  the sampling interval can be missed.
"""

import collections
import time

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import slots
from supervisor_fcgi_ext.supervisord import sockstats
from supervisor_fcgi_ext.common import spread

__all__ = ['ProcessView', 'PoolView', 'PoolMonitor']

ProcessView = collections.namedtuple('ProcessView', 'name pid state start')
ProcessView.__doc__ = """One process of a pool; pid 0 when not running."""

PoolView = collections.namedtuple(
    'PoolView', 'name url backlog sock processes held')
PoolView.__doc__ = """A pool as supervisor has it now.

sock is the listening socket object, or None while the socket is closed;
held says the plugin keeps it open while no worker runs."""

UNKNOWN = -1  # XML-RPC has no None: figures the kernel or worker cannot give



class PoolMonitor:
    """The memory of one pool between samples; figures since start or reset."""

    def __init__(self, name, scoreboard_dir=None, clock=time.time):
        self.name = name
        self.scoreboard_dir = scoreboard_dir
        self.clock = clock
        self.guard_counts = collections.Counter()
        # the connections each worker held at the last sample; kept across a
        # reset, since a connection held then is not a new one
        self.last_seen_inodes = {}
        self._reset_state({})

    def _reset_state(self, slots):
        self.start_time = self.clock()
        self.max_listen_queue = 0
        self.max_active_processes = 0
        self.retired = {'exact': [0, 0], 'sampled': [0, 0]}
        # counters a live worker already had at reset time
        self.baselines = {pid: (slot.accepted_conn, slot.requests)
                          for pid, slot in slots.items()}
        self.sampled_counts = collections.Counter()

    def reset(self, view):
        """Start all counters afresh, as PHP-FPM does on a new pool."""
        self._reset_state(self._good_slots(self._read_slots(view)))
        self.guard_counts.clear()

    def record(self, counter):
        """Count what fcgi-guard did (slow_requests, terminated_requests)."""
        self.guard_counts[counter] += 1
        return self.guard_counts[counter]

    # -- sampling (supervisord's loop, about once a second) ---------------

    def sample(self, view):
        """Record peaks and sampled connections; cheap enough for every tick."""
        queue = self._listener_figures(view, []).queue
        slots = self._read_slots(view)
        uncooperative = [p.pid for p in running(view)
                         if not isinstance(slots.get(p.pid), scoreboard.Slot)]
        held = {}
        if uncooperative and view.sock is not None:
            held = self._sample_connections(view, uncooperative)
        self._note_peaks(queue, self._count_active(view, slots, held))

    def _note_peaks(self, queue, active):
        self.max_listen_queue = max(self.max_listen_queue, queue)
        self.max_active_processes = max(self.max_active_processes, active)

    def _sample_connections(self, view, pids):
        """Count each connection once per worker, however many samples saw it."""
        try:
            accepted = sockstats.accepted_inodes(view.sock)
        except sockstats.SocketStatsError:
            return {}
        held = {}
        for pid in pids:
            inodes = sockstats.socket_inodes(pid) & accepted
            new = inodes - self.last_seen_inodes.get(pid, set())
            self.sampled_counts[pid] += len(new)
            self.last_seen_inodes[pid] = inodes
            held[pid] = len(inodes)
        return held

    def process_exited(self, pid):
        """Keep an exited worker's counts in the pool totals."""
        base_accepted, base_requests = self.baselines.pop(pid, (0, 0))
        slot = None
        if self.scoreboard_dir:
            slot = slots.harvest_slot(self.scoreboard_dir, self.name, pid)
        if slot is not None:
            self.retired['exact'][0] += max(0, slot.accepted_conn - base_accepted)
            self.retired['exact'][1] += max(0, slot.requests - base_requests)
        sampled = self.sampled_counts.pop(pid, 0)
        self.retired['sampled'][0] += sampled
        self.retired['sampled'][1] += sampled
        self.last_seen_inodes.pop(pid, None)

    # -- status (an XML-RPC call) -----------------------------------------

    def status(self, view):
        """The pool dict of fcgi.getPoolStatus."""
        warnings = []
        now = self.clock()
        figures = self._listener_figures(view, warnings)
        slots = self._read_slots(view)
        held = self._connections(view, slots, warnings)
        processes = [self._process_status(p, slots.get(p.pid), held, now,
                                          warnings)
                     for p in view.processes]
        active = sum(1 for p in processes if p['worker_state'] in scoreboard.BUSY_STATES)
        self._note_peaks(figures.queue, active)
        live = [p for p in processes if p['pid']]
        sources = {p['requests_source'] for p in live}
        totals = {'exact': list(self.retired['exact']),
                  'sampled': list(self.retired['sampled'])}
        for p in live:
            totals[p['requests_source']][0] += p['accepted_conn']
            totals[p['requests_source']][1] += p['requests']
        counts = [p['requests'] for p in live]
        return {
            'name': view.name,
            'socket': view.url,
            'socket_open': view.sock is not None,
            'socket_held': bool(view.held),
            'start_time': int(self.start_time),
            'start_since': int(now - self.start_time),
            'listen_queue': figures.queue,
            'max_listen_queue': self.max_listen_queue,
            'listen_queue_len': figures.backlog,
            'listen_drops': figures.drops,
            'total_processes': len(live),
            'idle_processes': len(live) - active,
            'active_processes': active,
            'max_active_processes': self.max_active_processes,
            'accepted_conn': totals['exact'][0] + totals['sampled'][0],
            'requests': totals['exact'][1] + totals['sampled'][1],
            'requests_source': scoreboard.combined_source(sources),
            'connections': sum(max(0, p['connections']) for p in live),
            'fairness': round(spread.jain_index(counts), 4),
            'balance': round(spread.balance(counts), 4),
            'slow_requests': self.guard_counts['slow_requests'],
            'terminated_requests': self.guard_counts['terminated_requests'],
            'processes': processes,
            'warnings': warnings,
        }

    def _process_status(self, proc, slot, held, now, warnings):
        status = {
            'name': proc.name,
            'pid': proc.pid,
            'state': proc.state,
            'start': int(proc.start),
            'connections': held.get(proc.pid, UNKNOWN) if proc.pid else 0,
            'requests_source': 'sampled',
            'accepted_conn': self.sampled_counts.get(proc.pid, 0),
            'requests': self.sampled_counts.get(proc.pid, 0),
            'worker_state': '',
            'request_duration': 0,
            'request_method': '',
            'request_uri': '',
            'content_length': 0,
            'last_request_cpu': 0.0,
            'last_request_memory': 0,
            'exceptions': 0,
        }
        if not proc.pid:
            status['worker_state'] = 'stopped'
            return status
        if isinstance(slot, scoreboard.Slot):
            base_accepted, base_requests = self.baselines.get(proc.pid, (0, 0))
            status.update({
                'requests_source': 'exact',
                'accepted_conn': max(0, slot.accepted_conn - base_accepted),
                'requests': max(0, slot.requests - base_requests),
                'worker_state': slot.state,
                'request_duration': slot.request_duration_us,
                'request_method': slot.request_method,
                'request_uri': slot.request_uri,
                'content_length': slot.content_length,
                'last_request_cpu': slot.last_request_cpu,
                'last_request_memory': slot.last_request_memory,
                'exceptions': slot.exceptions,
            })
            return status
        if slot is not None and not isinstance(slot, scoreboard.NoSlot):
            warnings.append('%s: scoreboard slot unreadable: %s'
                            % (proc.name, slot))
        busy = status['connections'] > 0
        status['worker_state'] = 'running' if busy else 'idle'
        return status

    # -- the readings -----------------------------------------------------

    def _listener_figures(self, view, warnings):
        if view.sock is None:
            return sockstats.ListenerStats(0, view.backlog or 0, UNKNOWN)
        try:
            return sockstats.listener_stats(view.sock)
        except sockstats.SocketStatsError as e:
            warnings.append('socket figures unavailable: %s' % e)
            return sockstats.ListenerStats(UNKNOWN, UNKNOWN, UNKNOWN)

    def _connections(self, view, slots, warnings):
        """Connections each worker holds now: a cooperating worker says so in
        its slot; the others are looked up at the socket level, which costs a
        /proc walk per worker."""
        held = {pid: slot.connections for pid, slot in slots.items()
                if isinstance(slot, scoreboard.Slot)}
        pids = [p.pid for p in running(view) if p.pid not in held]
        if view.sock is None or not pids:
            return held
        try:
            held.update(sockstats.connections_by_pid(view.sock, pids))
        except sockstats.SocketStatsError as e:
            warnings.append('connections unavailable: %s' % e)
        return held

    def _read_slots(self, view):
        pids = [p.pid for p in running(view)]
        if not self.scoreboard_dir or not pids:
            return {}
        return slots.read_pool(self.scoreboard_dir, view.name, pids)

    @staticmethod
    def _good_slots(slots):
        return {pid: slot for pid, slot in slots.items()
                if isinstance(slot, scoreboard.Slot)}

    def _count_active(self, view, slots, held):
        active = 0
        for proc in running(view):
            slot = slots.get(proc.pid)
            if isinstance(slot, scoreboard.Slot):
                active += slot.state in scoreboard.BUSY_STATES
            else:
                active += held.get(proc.pid, 0) > 0
        return active


def running(view):
    return [p for p in view.processes if p.pid]
