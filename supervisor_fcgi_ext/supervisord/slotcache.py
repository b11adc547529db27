"""One pool's slots read again and again at the cost of what changed.

A sample reads every worker's slot twice a second; opening, reading 1 KiB
three times and decoding 64 unchanged slots was two thirds of the plugin's
idle cost to supervisord.  So each live worker's slot fd stays open from
its first read to its exit, and a look is one pread of the record: the
same bytes are the same slot (a busy one's request duration brought to
now); any byte moved, or a short read, and the record is read and decoded
again (a header someone else spoiled is noticed at once, as a moved seq
is).  That holds while the pool directory is unchanged: its ctime, which no
user can set back, moves with every file made, renamed, linked or removed
in it, so the path still names the file the fd holds.  Otherwise a kept fd
is first checked: fstat (still our file under this number, still whole)
and a stat of the path (still naming it: a link elsewhere keeps a removed
file alive).  Workers without a slot cost nothing more than that one stat
of the directory.

The fds held are bounded (a quarter of RLIMIT_NOFILE for all pools: spawns
must never run out of fds); past that, slots are read the old way.  Every fd
is closed when its worker exits (`forget`), when its pid is no longer asked
for, and by `close`, which the plugin calls before a reload's cleanup_fds.
"""
import collections
import os
import resource
import stat
import time

from supervisor_fcgi_ext.common.scoreboard import (
    BUSY_STATES, RECORD_SIZE, NoSlot, ScoreboardError, Slot, decode_slot, os_reason,
    slot_path)
from supervisor_fcgi_ext.supervisord import slots

__all__ = ['SlotCache', 'DIR_SETTLE', 'fd_budget']

# A directory's ctime is trusted to tell "nothing was made here" only once it
# is this many seconds old: timestamps come from a coarse clock, so a file
# made in the same tick as our stat could leave it unchanged.
DIR_SETTLE = 1.0

_Entry = collections.namedtuple('_Entry', 'fd dev ino data slot now_us')


def _us(seconds):
    return int(round(seconds * 1e6))    # as the scoreboard's decode rounds


def _with_duration(slot, duration_us):
    """A copy of the frozen Slot with another request duration, without the
    cost of its __init__ (dataclasses.replace: as much as a decode, for
    each busy slot of every status)."""
    fields = slot.__dict__.copy()
    fields['request_duration_us'] = duration_us
    copy = _new(Slot)
    _set(copy, '__dict__', fields)
    return copy


_new, _set = object.__new__, object.__setattr__


def _brought_to(entry, now_us):
    """The entry's Slot as decoded at ``now_us``, or None when only a decode
    can tell (a busy slot's duration not counted from its kept value)."""
    slot = entry.slot
    if slot.state not in BUSY_STATES:
        return slot
    duration = slot.request_duration_us + now_us - entry.now_us
    if slot.request_duration_us > 0 and duration >= 0:
        return _with_duration(slot, duration)
    return None


_held = [0]   # fds held by all caches together


def fd_budget():
    """The fds all caches may hold: a quarter of the soft RLIMIT_NOFILE."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 256 if soft == resource.RLIM_INFINITY else soft // 4


def held_fds():
    return _held[0]


class SlotCache:
    """read(pids) answers as slots.read_pool does, from fds kept open."""

    def __init__(self, base, pool, clock=time.time):
        self.base, self.pool, self.clock = base, pool, clock
        self._entries = {}        # pid: _Entry
        self._absent = frozenset()  # pids without a slot at _dir_seen
        self._dir_seen = None
        self.changed = False      # did the last read find a slot changed?
        self.records = {}         # {pid: record bytes} of the last read's kept slots

    def read(self, pids, now=None):
        """{pid: Slot or ScoreboardError} of every pid asked; fds of pids not
        asked are closed.  Sets `changed`, and `records`: the bytes each
        Slot from a kept fd was decoded from (the same object until the
        record is read again)."""
        self.changed = False
        records = self.records = {}
        now = time.time() if now is None else now
        asked = set(pids)
        for pid in [p for p in self._entries if p not in asked]:
            self.forget(pid)
        directory = self._dir_state()
        trusted = directory is not None and directory == self._dir_seen
        result = {}
        budget = fd_budget()
        now_us = _us(now)
        entries, absent = self._entries, self._absent
        for pid in pids:
            entry = entries.get(pid)
            if trusted:
                if entry is not None:
                    # the path still names the file the fd holds: the same
                    # bytes there are the same slot (inline: every status)
                    try:
                        same = os.pread(entry.fd, RECORD_SIZE, 0) == entry.data
                    except OSError:
                        same = False
                    slot = entry.slot
                    if same and slot.state in BUSY_STATES:
                        slot = _brought_to(entry, now_us)
                    if same and slot is not None:
                        result[pid], records[pid] = slot, entry.data
                        continue
                elif pid in absent:
                    result[pid] = NoSlot('no slot')
                    continue
            try:
                result[pid] = self._read(pid, now, budget, trusted)
            except ScoreboardError as exc:
                result[pid] = exc
                continue
            entry = entries.get(pid)
            if entry is not None:
                records[pid] = entry.data
        absent = frozenset(pid for pid, got in result.items() if isinstance(got, NoSlot))
        if absent != self._absent:
            self.changed = True
        self._absent = absent
        settled = directory is not None and self.clock() - directory[2] / 1e9 > DIR_SETTLE
        self._dir_seen = directory if settled else None
        return result

    def _dir_state(self):
        try:
            st = os.stat(os.path.join(self.base, self.pool), follow_symlinks=False)
        except (OSError, ValueError):
            return None
        return st.st_dev, st.st_ino, st.st_ctime_ns

    def _read(self, pid, now, budget, trusted):
        entry = self._entries.get(pid)
        if entry is not None:
            slot = self._again(pid, entry, now, trusted)
            if slot is not None:
                return slot
        fd, _ = slots.open_slot(slot_path(self.base, self.pool, pid))
        try:
            data, slot = slots.read_record(fd, pid, now)
            st = os.fstat(fd)
        except (ScoreboardError, OSError) as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise ScoreboardError('cannot read slot: %s' % os_reason(exc))
            raise
        self.changed = True
        if _held[0] >= budget:
            os.close(fd)
        else:
            _held[0] += 1
            self._entries[pid] = _Entry(fd, st.st_dev, st.st_ino, data, slot, _us(now))
        return slot

    def _again(self, pid, entry, now, trusted):
        """The slot from a kept fd, or None to open the path afresh.  Unless
        the directory is trusted, the path must still name the fd's file (a
        link elsewhere keeps a removed one alive)."""
        try:
            st = os.fstat(entry.fd)
            if (st.st_ino, st.st_dev) != (entry.ino, entry.dev):
                # not our file under this number: never ours to close
                del self._entries[pid]
                _held[0] -= 1
                return None
            if not trusted:
                st = os.stat(slot_path(self.base, self.pool, pid), follow_symlinks=False)
            if ((st.st_ino, st.st_dev) != (entry.ino, entry.dev) or st.st_size < RECORD_SIZE
                    or not stat.S_ISREG(st.st_mode)):
                self.forget(pid)    # replaced, removed or cut short
                return None
            data = os.pread(entry.fd, RECORD_SIZE, 0)
        except OSError:
            self.forget(pid)
            return None
        if data != entry.data:
            try:
                data, slot = slots.read_record(entry.fd, pid, now, regular=True)
            except ScoreboardError:
                self.forget(pid)     # opened afresh, to say why
                return None
            self.changed = True
            self._entries[pid] = _Entry(entry.fd, entry.dev, entry.ino, data, slot, _us(now))
            return slot
        return _brought_to(entry, _us(now)) or decode_slot(entry.data, now, pid)

    def forget(self, pid):
        """Close the fd kept for ``pid`` (it exited, or its file changed)."""
        entry = self._entries.pop(pid, None)
        if entry is not None:
            _held[0] -= 1
            try:
                os.close(entry.fd)
            except OSError:
                pass

    def close(self):
        """Close every fd kept; the cache opens them again when next read."""
        for pid in list(self._entries):
            self.forget(pid)
        self._absent, self._dir_seen = frozenset(), None
