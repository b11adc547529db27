"""The facts one look at a pool reads, gathered once into plain data.

Every reading of the kernel, /proc and the scoreboard that a status or a
sample needs happens here, bounded (see sockstats); `poolstatus` then
computes from the `Facts` alone, so its tests need no sockets.
"""
import collections
import os

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import slots, sockstats

__all__ = ['UNKNOWN', 'Facts', 'gather', 'frozen_pids', 'running', 'is_busy']

UNKNOWN = -1  # XML-RPC has no None: figures the kernel or worker cannot give

Facts = collections.namedtuple(
    'Facts', 'listener slots held unavailable frozen warnings limits verdicts records busy',
    defaults=(None, frozenset()))
Facts.__doc__ = """What one look at a pool found.

listener: ListenerStats (UNKNOWN where unavailable); slots: {pid: Slot or
ScoreboardError} of the running pids; held: {pid: inodes of pool connections}
of the running workers without a good slot, unavailable: {pid: reason} of
those whose connections could not be read within the bounds; frozen: the
pids not busy that a signal stopped; warnings: one-line texts; limits: the
bounds hit (to log once); verdicts: sockstats' unix verdicts for the next
look; records:
{pid: the slot record's bytes} of the slots a SlotCache read (the same
bytes object until the record is read again), or None; busy: the pids with a
request in flight (see is_busy)."""

# /proc/PID/stat states of a process stopped by a signal or a debugger
STOPPED_STATES = frozenset((b'T', b't'))


def running(view):
    return [p for p in view.processes if p.pid]


def is_busy(slot, held):
    """A worker with a request in flight: its slot says so, or (without a
    slot) it holds a connection."""
    if isinstance(slot, scoreboard.Slot):
        return slot.state in scoreboard.BUSY_STATES
    return len(held or ()) > 0


def gather(view, scoreboard_dir, known=None, states=True, turn=0, cache=None,
           tcp_dumps=None, stopped=None):
    """Read the pool once: listener, slots, held connections, frozen pids.

    ``known``: the verdicts of the previous look; ``states``: read /proc/PID/stat
    (a status needs them, a sample does not); ``turn``: which worker's
    connections to read first, so that when the time budget cuts a look
    short each worker's turn still comes; ``cache``: the SlotCache that reads
    the slots (by default slots.read_pool of scoreboard_dir, no records);
    ``tcp_dumps``: (tcpconns.TcpDumps, pass) to share a TCP dump with the
    other pools' looks of the same pass; ``stopped(pids)``: which of them are
    frozen (a stops.StopWatch's frozen; by default frozen_pids)."""
    warnings, limits = [], []
    pids = [p.pid for p in running(view)]
    listener = _listener(view, warnings)
    found, records = {}, None
    if scoreboard_dir and pids:
        if cache is not None:
            found, records = cache.read(pids), cache.records
        else:
            found = slots.read_pool(scoreboard_dir, view.name, pids)
    others = [pid for pid in pids if not isinstance(found.get(pid), scoreboard.Slot)]
    if others:
        first = turn % len(others)
        others = others[first:] + others[:first]
    held, unavailable, verdicts = {}, {}, dict(known or {})
    if others and view.sock is not None:
        try:
            held, unavailable, verdicts = sockstats.held_connections(
                view.sock, others, known, tcp_dumps)
        except sockstats.SocketStatsError as e:
            unavailable = dict.fromkeys(others, str(e))
        names = {p.pid: p.name for p in view.processes}
        for pid, reason in sorted(unavailable.items()):
            warnings.append('%s: connections unavailable: %s' % (names[pid], reason))
        limits = sorted(set(unavailable.values()))
    busy = frozenset([pid for pid in pids if is_busy(found.get(pid), held.get(pid))])
    frozen = frozenset()
    if states:   # a worker frozen in a request stays busy: its request is stuck
        frozen = (stopped or frozen_pids)([pid for pid in pids if pid not in busy])
    return Facts(listener, found, held, unavailable, frozen, warnings, limits, verdicts,
                 records, busy)


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
            fd = os.open('/proc/%d/stat' % pid, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            data = os.read(fd, 512)
        except OSError:
            continue
        finally:
            os.close(fd)
        # "pid (comm) S ...": comm may hold ')' and spaces, the state follows the last
        if data.rpartition(b')')[2][1:2] in STOPPED_STATES:
            frozen.add(pid)
    return frozenset(frozen)
