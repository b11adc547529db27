"""What happened to a pool's processes: respawns, unexpected exits,
recycles, guard kills.

Counted from supervisor's events (plugin.on_state) and fcgi-guard's
reports into plain memory per process name (supervisor's, stable across
respawns), so a worker's exit never lowers a count and a pool's count is its
processes' added up.
"""
import collections

from supervisor import events

__all__ = ['EVENTS', 'Lifecycle', 'exit_kind']

# respawns: starts after the process's first; unexpected_exits: exits with a
# code not in exitcodes, or before startsecs (BACKOFF); recycles: exits at
# the worker's own max-requests, and stops by fcgi-guard's --max-requests;
# guard_kills: stops by fcgi-guard's --request-timeout
EVENTS = ('respawns', 'unexpected_exits', 'recycles', 'guard_kills')


class Lifecycle:
    """The counts of one pool since its start or reset."""

    def __init__(self):
        self.seen = set()          # names started once: kept across a reset
        self.counts = collections.defaultdict(collections.Counter)
        self.version = 0           # moves with every change of the counts

    def started(self, name):
        if name in self.seen:
            self.counts[name]['respawns'] += 1
            self.version += 1
        self.seen.add(name)

    def count(self, name, event):
        if event not in EVENTS:
            raise ValueError('not a lifecycle event: %r' % (event,))
        self.counts[name][event] += 1
        self.version += 1
        return self.counts[name][event]

    def reset(self):
        self.counts.clear()
        self.version += 1

    def of(self, name):
        """{event: count} of one process (0 for what never happened)."""
        counts = self.counts.get(name, {})
        return {event: counts.get(event, 0) for event in EVENTS}

    def totals(self):
        """{event: count} of the pool: every process it has had."""
        return {event: sum(c[event] for c in self.counts.values()) for event in EVENTS}


def exit_kind(event):
    """How the exit in a supervisor state event went: 'unexpected' (an exit
    code not in exitcodes, or BACKOFF: before startsecs), 'expected', or
    'stopped' (by supervisor: a user, fcgi-guard, a restart)."""
    if isinstance(event, events.ProcessStateBackoffEvent):
        return 'unexpected'
    if isinstance(event, events.ProcessStateExitedEvent):
        return 'expected' if event.expected else 'unexpected'
    return 'stopped'
