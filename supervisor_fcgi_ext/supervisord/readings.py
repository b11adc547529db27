"""The facts one look at a pool reads, gathered once into plain data.

Every reading of the kernel, /proc and the scoreboard that a status or a
sample needs happens here, bounded (see sockstats); `poolstatus` then
computes from the `Facts` alone, so its tests need no sockets.
"""
import collections

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import slots, sockstats

__all__ = ['UNKNOWN', 'Facts', 'gather', 'frozen_pids', 'running']

UNKNOWN = -1  # XML-RPC has no None: figures the kernel or worker cannot give

Facts = collections.namedtuple(
    'Facts', 'listener slots held unavailable frozen warnings limits verdicts')
Facts.__doc__ = """What one look at a pool found.

listener: ListenerStats (UNKNOWN where unavailable); slots: {pid: Slot or
ScoreboardError} of the running pids; held: {pid: inodes of pool connections}
of the running workers without a good slot, unavailable: {pid: reason} of
those whose connections could not be read within the bounds; frozen: pids
stopped by a signal; warnings: one-line texts; limits: the bounds hit (to
log once); verdicts: sockstats' unix verdicts for the next look."""

# /proc/PID/stat states of a process stopped by a signal or a debugger
STOPPED_STATES = frozenset((b'T', b't'))


def running(view):
    return [p for p in view.processes if p.pid]


def gather(view, scoreboard_dir, known=None, states=True):
    """Read the pool once: listener, slots, held connections, frozen pids.

    ``known``: the verdicts of the previous look; ``states``: read /proc/PID/stat
    (a status needs them, a sample does not)."""
    warnings, limits = [], []
    pids = [p.pid for p in running(view)]
    listener = _listener(view, warnings)
    found = {}
    if scoreboard_dir and pids:
        found = slots.read_pool(scoreboard_dir, view.name, pids)
    others = [pid for pid in pids if not isinstance(found.get(pid), scoreboard.Slot)]
    held, unavailable, verdicts = {}, {}, {}
    if others and view.sock is not None:
        try:
            result = sockstats.held_connections(view.sock, others, known)
            held, unavailable, verdicts = result
        except sockstats.SocketStatsError as e:
            unavailable = dict.fromkeys(others, str(e))
        names = {p.pid: p.name for p in view.processes}
        for pid, reason in sorted(unavailable.items()):
            warnings.append('%s: connections unavailable: %s' % (names[pid], reason))
        limits = sorted(set(unavailable.values()))
    frozen = frozen_pids(pids) if states else frozenset()
    return Facts(listener, found, held, unavailable, frozen, warnings, limits, verdicts)


def _listener(view, warnings):
    if view.sock is None:
        return sockstats.ListenerStats(0, view.backlog or 0, UNKNOWN)
    try:
        return sockstats.listener_stats(view.sock)
    except sockstats.SocketStatsError as e:
        warnings.append('socket figures unavailable: %s' % e)
        return sockstats.ListenerStats(UNKNOWN, UNKNOWN, UNKNOWN)


def frozen_pids(pids):
    """The pids stopped by a signal (SIGSTOP, SIGTSTP...) or a debugger:
    one read of /proc/PID/stat each; a pid gone meanwhile is not frozen."""
    frozen = set()
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid, 'rb') as f:
                data = f.read(512)
        except OSError:
            continue
        fields = data.rpartition(b')')[2].split()
        if fields and fields[0] in STOPPED_STATES:
            frozen.add(pid)
    return frozenset(frozen)
