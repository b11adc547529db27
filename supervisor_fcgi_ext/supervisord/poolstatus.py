"""fcgi.getPoolStatus's dicts, computed from plain data alone.

`readings.gather` reads the facts; `PoolMonitor` keeps the memory between
looks (`Memory`); the functions here only combine the two, so every field is
tested on plain values.
"""
import collections

from supervisor_fcgi_ext.common import scoreboard, spread
from supervisor_fcgi_ext.common.text import safe_text
from supervisor_fcgi_ext.supervisord import durations
from supervisor_fcgi_ext.supervisord.lifecycle import EVENTS
from supervisor_fcgi_ext.supervisord.readings import UNKNOWN

__all__ = ['Memory', 'FROZEN', 'UNREAD', 'SLOT_STATUSES', 'process_status',
           'process_entries', 'pool_status',
           'slot_status', 'pool_durations']

# worker_state of a worker stopped by a signal outside a request (one
# stopped in a request stays busy: its request is stuck, and fcgi-guard's
# slow-request rules must still see it)
FROZEN = 'frozen'
# worker_state of a worker without a slot whose connections a bound left
# unread: counted neither active nor idle
UNREAD = 'unknown'
# slot_status of a process: its slot read (ok), there is none (absent: the
# worker writes none, or is not running), or it cannot be read (unavailable:
# its exact figures are left out)
SLOT_STATUSES = ('ok', 'absent', 'unavailable')
_NO_BASE = (0, 0, durations.EMPTY)
# the lifecycle counts of a process to which nothing happened
_NO_EVENTS = dict.fromkeys(EVENTS, 0)

Memory = collections.namedtuple(
    'Memory', 'start_time max_listen_queue max_active_processes retired '
              'baselines sampled_counts guard_counts durations lifecycle')
Memory.__doc__ = """What PoolMonitor remembers, as status() needs it: retired is
{source: [accepted_conn, requests]} of exited workers, durations their
Durations, baselines {pid: (accepted_conn, requests, Durations)} at reset,
sampled_counts {pid: connections seen}, lifecycle a Lifecycle."""


def slot_status(slot):
    """ok / absent / unavailable (SLOT_STATUSES) of what reading a slot gave."""
    if isinstance(slot, scoreboard.Slot):
        return 'ok'
    if slot is None or isinstance(slot, scoreboard.NoSlot):
        return 'absent'
    return 'unavailable'


def process_entries(view, facts, memory, memo=None):
    """The pool's ``processes``.  With a StatusMemo (statusmemo.py), an exact
    entry whose inputs are those of the last status is the entry made then."""
    if memo is None:
        return [process_status(proc, facts, memory) for proc in view.processes]
    last, made = memo.begin()
    slots, records, frozen = facts.slots, facts.records or {}, facts.frozen
    baselines, version = memory.baselines, memory.lifecycle.version
    entries = []
    for proc in view.processes:
        pid = proc.pid
        record = records.get(pid) if pid else None
        if record is None:          # no slot, or one read without a kept record
            entries.append(process_status(proc, facts, memory))
            memo.fresh += isinstance(slots.get(pid), scoreboard.Slot)
            continue
        slot = slots[pid]
        key = (proc, record, baselines.get(pid), version, pid in frozen)
        kept = last.get(pid)
        if kept is not None and kept[0] == key:
            entry = kept[1]
            if slot.state in scoreboard.BUSY_STATES \
                    and entry['request_duration'] != slot.request_duration_us:
                entry = entry.copy()    # the one field that time moves
                entry['request_duration'] = slot.request_duration_us
        else:
            memo.fresh += 1
            entry = process_status(proc, facts, memory)
        made[pid] = (key, entry)
        entries.append(entry)
    return entries


def process_status(proc, facts, memory):
    """One entry of a pool's ``processes``: one dict literal per kind (with
    its slot, without, stopped), in the order every kind shares."""
    pid, name = proc.pid, proc.name
    events = _NO_EVENTS if name not in memory.lifecycle.counts else memory.lifecycle.of(name)
    slot = facts.slots.get(pid) if pid else None
    if isinstance(slot, scoreboard.Slot):
        base_accepted, base_requests, _ = memory.baselines.get(pid, _NO_BASE)
        status = {
            'name': name, 'pid': pid, 'state': proc.state, 'start': int(proc.start),
            'connections': slot.connections,
            'requests_source': 'exact',
            'accepted_conn': max(0, slot.accepted_conn - base_accepted),
            'requests': max(0, slot.requests - base_requests),
            'worker_state': slot.state,
            'request_duration': slot.request_duration_us,
            'last_request_duration': slot.last_request_duration_us,
            'request_method': slot.request_method,   # safe_text'ed when decoded
            'request_uri': slot.request_uri,
            'content_length': slot.content_length,
            'last_request_cpu': slot.last_request_cpu,
            'last_request_memory': slot.last_request_memory,
            'exceptions': slot.exceptions,
            'slot_status': 'ok',
            **events}
    else:
        held = facts.held.get(pid)
        sampled = memory.sampled_counts.get(pid, 0)
        if not pid:
            worker_state = 'stopped'
        elif pid in facts.unavailable:      # busy or idle: no one can tell
            worker_state = UNREAD
        else:
            worker_state = 'running' if held else 'idle'
        status = {
            'name': name, 'pid': pid, 'state': proc.state, 'start': int(proc.start),
            'connections': 0 if not pid else UNKNOWN if held is None else len(held),
            'requests_source': 'sampled', 'accepted_conn': sampled, 'requests': sampled,
            'worker_state': worker_state,
            'request_duration': 0, 'last_request_duration': 0, 'request_method': '',
            'request_uri': '', 'content_length': 0, 'last_request_cpu': 0.0,
            'last_request_memory': 0, 'exceptions': 0,
            'slot_status': slot_status(slot),
            **events}
    if pid in facts.frozen:
        status['worker_state'] = FROZEN
    return status


def slot_warnings(view, facts):
    """A slot that exists but cannot be read is worth a warning; none is not."""
    return ['%s: scoreboard slot unreadable: %s' % (p.name, facts.slots[p.pid])
            for p in view.processes
            if p.pid and isinstance(facts.slots.get(p.pid), scoreboard.ScoreboardError)
            and not isinstance(facts.slots[p.pid], scoreboard.NoSlot)]


def pool_durations(view, facts, memory):
    """The pool's Durations: the exited workers', and the running ones' since
    their baseline."""
    parts = [memory.durations]
    for p in view.processes:
        slot = facts.slots.get(p.pid) if p.pid else None
        if isinstance(slot, scoreboard.Slot):
            found = durations.Durations(slot.request_duration_counts,
                                        slot.request_duration_sum_us)
            base = memory.baselines.get(p.pid)
            parts.append(found if base is None else durations.since(found, base[2]))
    return durations.add_all(parts)


def _quantile(q, found):
    value = durations.quantile(q, found)
    return UNKNOWN if value is None else round(value, 6)


def duration_fields(found):
    """The histogram's fields of a pool status (seconds; UNKNOWN: no request)."""
    buckets = durations.cumulative(found)
    return {
        'request_duration_buckets': [[bound, count] for bound, count
                                     in zip(durations.BOUNDS_SECONDS, buckets)],
        'request_duration_count': buckets[-1],
        'request_duration_sum': found.sum_us / 1e6,
        'request_duration_p50': _quantile(0.5, found),
        'request_duration_p99': _quantile(0.99, found),
    }


def entry_sums(view, facts, processes):
    """The pool's figures that are sums over its live process entries, and
    its slot warnings."""
    live = [p for p in processes if p['pid']]
    states = collections.Counter([p['worker_state'] for p in live])
    active = sum(states[state] for state in scoreboard.BUSY_STATES)
    counts = [p['requests'] for p in live]
    connections = [p['connections'] for p in live]
    return {
        'total_processes': len(live),
        'idle_processes': len(live) - active - states[FROZEN] - states[UNREAD],
        'active_processes': active,
        'frozen_processes': states[FROZEN],
        'accepted_conn': sum([p['accepted_conn'] for p in live]),
        'requests': sum(counts),
        'requests_source': scoreboard.combined_source([p['requests_source'] for p in live]),
        'connections': sum(connections) - sum([c for c in connections if c < 0]),
        'fairness': round(spread.jain_index(counts), 4),
        'balance': round(spread.balance(counts), 4),
        'warnings': slot_warnings(view, facts),
    }


def pool_status(view, facts, memory, now, memo=None):
    """The pool dict of fcgi.getPoolStatus (memory already holds this look's
    peaks); ``memo``: a StatusMemo kept from the last status of the pool."""
    processes = process_entries(view, facts, memory, memo)
    if memo is None:
        sums = entry_sums(view, facts, processes)
        histogram = duration_fields(pool_durations(view, facts, memory))
    else:   # sums given again only while every live entry is an exact one given again
        exact = [p['pid'] for p in processes if p['slot_status'] == 'ok']
        live = sum([1 for p in processes if p['pid']])
        sums = memo.part('sums', exact if live == len(exact) else None,
                         lambda: entry_sums(view, facts, processes))
        histogram = memo.part('histogram', (memory.durations, exact),
                              lambda: duration_fields(pool_durations(view, facts, memory)))
    retired = [sum(memory.retired[source][i] for source in scoreboard.SOURCES)
               for i in (0, 1)]
    listener = facts.listener
    return {
        'name': view.name,
        'socket': view.url,
        'socket_open': view.sock is not None,
        'socket_held': bool(view.held),
        'start_time': int(memory.start_time),
        'start_since': int(now - memory.start_time),
        'listen_queue': listener.queue,
        'max_listen_queue': memory.max_listen_queue,
        'listen_queue_len': listener.backlog,
        'listen_drops': listener.drops,
        'total_processes': sums['total_processes'],
        'max_processes': len(view.processes),
        'idle_processes': sums['idle_processes'],
        'active_processes': sums['active_processes'],
        'frozen_processes': sums['frozen_processes'],
        'max_active_processes': memory.max_active_processes,
        'accepted_conn': retired[0] + sums['accepted_conn'],
        'requests': retired[1] + sums['requests'],
        'requests_source': sums['requests_source'],
        'connections': sums['connections'],
        'fairness': sums['fairness'],
        'balance': sums['balance'],
        'slow_requests': memory.guard_counts['slow_requests'],
        'terminated_requests': memory.guard_counts['terminated_requests'],
        **memory.lifecycle.totals(),
        **histogram,
        'processes': processes,
        'warnings': [safe_text(w) for w in list(facts.warnings) + sums['warnings']],
    }
