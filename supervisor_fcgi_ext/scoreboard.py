"""The scoreboard: one fixed-size binary slot file per worker, read by supervisord.

Each cooperating worker of pool P writes ``<base>/<P>/<pid>.slot`` through an
mmap, under a seqlock (docs/scoreboard.rst is the format spec, for writers in
any language).  supervisord reads the slots without mmap, locks or blocking
calls: a hostile or truncated file can only produce a ScoreboardError, never
a SIGBUS, a hang or another exception inside supervisord.
"""
from __future__ import annotations

import mmap
import os
import re
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ['ENV_VAR', 'ScoreboardError', 'WORKER_STATES', 'Slot', 'RECORD_SIZE',
           'encode_slot', 'decode_slot', 'ensure_pool_dir', 'slot_path',
           'read_slot', 'read_pool', 'harvest_slot', 'remove_stale', 'SlotWriter']

ENV_VAR = 'SUPERVISOR_FCGI_SCOREBOARD'
WORKER_STATES = ('starting', 'idle', 'reading', 'running', 'finishing')
_BUSY = frozenset((2, 3, 4))   # reading, running, finishing: a request in flight

MAGIC = b'SVFCGISB'
VERSION = 1
RECORD_SIZE = 512
METHOD_SIZE = 16
URI_SIZE = 256
# Offset 0: constant header, then the seqlock counter.
_HEADER = struct.Struct('<8sHHIQ')
_SEQ = struct.Struct('<Q')
SEQ_OFFSET = 16
# Offset 24: the payload, in the spec's order (docs/scoreboard.rst); offsets
# 400..511 are reserved (zero) for additions that old readers can ignore.
_LAYOUT = (('start_time', 'q'), ('accepted_conn', 'Q'), ('requests', 'Q'),
           ('exceptions', 'Q'), ('protocol_errors', 'Q'), ('bytes_sent', 'Q'),
           ('max_requests', 'Q'), ('request_start', 'q'),
           ('last_request_duration', 'q'), ('content_length', 'q'),
           ('last_request_memory', 'Q'), ('last_request_cpu', 'd'),
           ('last_status', 'H'), ('active', 'H'), ('threads', 'H'),
           ('state', 'B'), (None, 'x'), ('method', '%ds' % METHOD_SIZE),
           ('uri', '%ds' % URI_SIZE))
BODY_OFFSET = 24
_BODY = struct.Struct('<' + ''.join(fmt for _, fmt in _LAYOUT))
assert BODY_OFFSET + _BODY.size == 400 <= RECORD_SIZE
OFFSETS = {}
_prefix = '<'
for _name, _fmt in _LAYOUT:
    if _name:
        OFFSETS[_name] = BODY_OFFSET + struct.calcsize(_prefix)
    _prefix += _fmt
del _prefix, _name, _fmt
# The writer packs one contiguous run of fields per update: every update is
# three C calls (seq odd, fields, seq even), since in a busy worker each line
# of Python costs more than the bytes it writes.
_COUNTERS = struct.Struct('<QQQQQQ')          # accepted_conn .. max_requests
_STARTED = struct.Struct('<QQQQQQqqqQdHHHBx%ds%ds' % (METHOD_SIZE, URI_SIZE))
_FINISHED = struct.Struct('<QQQQQQqqqQdHHHB')  # accepted_conn .. state
_COUNTERS_OFFSET = OFFSETS['accepted_conn']
_STATE_OFFSET = OFFSETS['state']

# Bounded retries of a torn read; a writer holds the seq odd for a few µs.
READ_RETRIES = 5
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
               | os.O_NOCTTY)
_SLOT_NAME = re.compile(r'^([1-9][0-9]{0,9})\.slot$')
_TMP_NAME = re.compile(r'^([1-9][0-9]{0,9})\.slot\.tmp$')


class ScoreboardError(Exception):
    """A slot or pool directory that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Slot:
    """One worker's slot as read; times are float epoch seconds."""
    pid: int
    start_time: float
    state: str
    accepted_conn: int = 0
    requests: int = 0
    request_method: str = ''
    request_uri: str = ''
    content_length: int = 0
    request_start: float = 0.0        # current request, else the last one; 0: none yet
    request_duration_us: int = 0      # elapsed if a request is in flight, else the last one's
    last_request_duration_us: int = 0
    last_request_cpu: float = 0.0     # % of one CPU over the last request's wall time
    last_request_memory: int = 0      # peak RSS in bytes at the end of the last request
    last_status: int = 0              # HTTP status of the last response, 0: none
    active: int = 0                   # requests in flight (> 1 only with threads)
    threads: int = 1
    max_requests: int = 0             # the worker exits after this many; 0: never
    exceptions: int = 0               # requests whose app raised (answered 500)
    protocol_errors: int = 0          # connections dropped: bad records, timeouts, EOF
    bytes_sent: int = 0


def _us(seconds):
    return int(round(seconds * 1e6))


def _text(raw):
    return raw.split(b'\0', 1)[0].decode('utf-8', 'replace')


def _raw(text, size):
    try:
        data = text.encode('latin-1')    # flup's params: raw bytes as latin-1
    except UnicodeEncodeError:
        data = text.encode('utf-8', 'replace')
    return data[:size]


def encode_slot(slot, seq=0):
    """The RECORD_SIZE bytes of ``slot`` (its last_request_duration_us is stored)."""
    try:
        state = WORKER_STATES.index(slot.state)
    except ValueError:
        raise ScoreboardError('unknown worker state %r' % (slot.state,))
    body = _BODY.pack(
        _us(slot.start_time), slot.accepted_conn, slot.requests, slot.exceptions,
        slot.protocol_errors, slot.bytes_sent, slot.max_requests,
        _us(slot.request_start), slot.last_request_duration_us, slot.content_length,
        slot.last_request_memory, slot.last_request_cpu, slot.last_status,
        slot.active, slot.threads, state, _raw(slot.request_method, METHOD_SIZE),
        _raw(slot.request_uri, URI_SIZE))
    record = _HEADER.pack(MAGIC, VERSION, RECORD_SIZE, slot.pid, seq) + body
    return record.ljust(RECORD_SIZE, b'\0')


def decode_slot(data, now=None, pid=None):
    """The Slot in ``data`` (a consistent record); ScoreboardError when it is not one."""
    if len(data) < RECORD_SIZE:
        raise ScoreboardError('truncated slot (%d of %d bytes)' % (len(data), RECORD_SIZE))
    magic, version, size, rpid, seq = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ScoreboardError('not a slot file (bad magic)')
    if version != VERSION or size != RECORD_SIZE:
        raise ScoreboardError('unsupported slot format version %d size %d' % (version, size))
    if pid is not None and rpid != pid:
        raise ScoreboardError('slot belongs to pid %d, not %d' % (rpid, pid))
    if seq & 1:
        raise ScoreboardError('slot is being written')
    (start, accepted, requests, exceptions, errors, sent, max_requests, req_start,
     last_duration, content_length, memory, cpu, status, active, threads, state,
     method, uri) = _BODY.unpack_from(data, BODY_OFFSET)
    if state >= len(WORKER_STATES):
        raise ScoreboardError('bad worker state %d' % state)
    duration = last_duration
    if state in _BUSY and req_start > 0:
        now_us = _us(time.time() if now is None else now)
        duration = max(0, now_us - req_start)
    return Slot(rpid, start / 1e6, WORKER_STATES[state], accepted, requests,
                _text(method), _text(uri), content_length, req_start / 1e6,
                duration, last_duration, cpu, memory, status, active, threads,
                max_requests, exceptions, errors, sent)


def _check_pool(pool):
    if not isinstance(pool, str) or not pool or pool in ('.', '..') \
            or '/' in pool or '\0' in pool or len(pool.encode('utf-8', 'replace')) > 255:
        raise ScoreboardError('bad pool name %r' % (pool,))


def _reason(exc):
    return exc.strerror or str(exc)


def ensure_pool_dir(base, pool, uid=None):
    """Make ``<base>/<pool>/`` mode 0700 owned by ``uid``; return its path.

    Idempotent; fixes a wrong mode or owner; refuses a symlink or non-directory.
    """
    _check_pool(pool)
    path = os.path.join(base, pool)
    try:
        os.makedirs(base, 0o755, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ScoreboardError('pool directory %s is not a directory: %s'
                                  % (path, _reason(exc)))
        try:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
            if uid is not None and st.st_uid != uid:
                os.fchown(fd, uid, -1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ScoreboardError('cannot prepare pool directory %s: %s' % (path, _reason(exc)))
    return path


def slot_path(base, pool, pid):
    _check_pool(pool)
    if not isinstance(pid, int) or pid <= 0:
        raise ScoreboardError('bad pid %r' % (pid,))
    return os.path.join(base, pool, '%d.slot' % pid)


def read_slot(path, now=None):
    """Read one slot file: never blocks, never follows a symlink, never mmaps.

    Seqlock: the counter is read before and after the record (three preads, so
    no assumption on the order a copy runs in); an odd or changed counter is
    retried READ_RETRIES times, then refused.
    """
    match = _SLOT_NAME.match(os.path.basename(path))
    if match is None:
        raise ScoreboardError('not a slot file name: %s' % os.path.basename(path))
    pid = int(match.group(1))
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ScoreboardError('no slot')
    except OSError as exc:
        raise ScoreboardError('cannot open slot: %s' % _reason(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ScoreboardError('slot is not a regular file')
        if st.st_size < RECORD_SIZE:
            raise ScoreboardError('truncated slot (%d of %d bytes)' % (st.st_size, RECORD_SIZE))
        for attempt in range(READ_RETRIES):
            before = os.pread(fd, 8, SEQ_OFFSET)
            data = os.pread(fd, RECORD_SIZE, 0)
            after = os.pread(fd, 8, SEQ_OFFSET)
            if len(data) < RECORD_SIZE:
                raise ScoreboardError('truncated slot (%d of %d bytes)' % (len(data), RECORD_SIZE))
            if before == after and not before[0] & 1:
                return decode_slot(data, now, pid)
            os.sched_yield()
        raise ScoreboardError('slot still being written after %d reads' % READ_RETRIES)
    except OSError as exc:
        raise ScoreboardError('cannot read slot: %s' % _reason(exc))
    finally:
        os.close(fd)


def read_pool(base, pool, pids):
    """{pid: Slot or ScoreboardError} for every pid asked; one open per pid."""
    result = {}
    for pid in pids:
        try:
            result[pid] = read_slot(slot_path(base, pool, pid))
        except ScoreboardError as exc:
            result[pid] = exc
    return result


def harvest_slot(base, pool, pid):
    """The final read of an exited worker's slot, then unlink it; never raises."""
    try:
        path = slot_path(base, pool, pid)
    except ScoreboardError:
        return None
    try:
        slot = read_slot(path)
    except ScoreboardError:
        slot = None
    try:
        os.unlink(path)
    except OSError:
        pass
    return slot


def remove_stale(base, pool, live_pids):
    """Unlink slots of pids not in ``live_pids`` and junk files; never raises.

    A live worker's ``<pid>.slot.tmp`` is kept: it is being created.
    Returns the pids whose slots were removed, sorted.
    """
    live = set(live_pids)
    removed = []
    try:
        _check_pool(pool)
        dfd = os.open(os.path.join(base, pool),
                      os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (ScoreboardError, OSError):
        return removed
    try:
        for name in os.listdir(dfd):
            match = _SLOT_NAME.match(name) or _TMP_NAME.match(name)
            pid = int(match.group(1)) if match else None
            if pid in live:
                continue
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                continue
            if match and name.endswith('.slot'):
                removed.append(pid)
    except OSError:
        pass
    finally:
        os.close(dfd)
    return sorted(removed)


def _log(message):
    try:
        sys.stderr.write('fcgi-worker[%d]: %s\n' % (os.getpid(), message))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class SlotWriter:
    """The worker's side: owns ``<pid>.slot`` and updates it through an mmap.

    Each update packs the changed run of fields between an odd and an even
    seqlock counter.  Not thread-safe: from_environ(threads > 1) returns a
    locked subclass.
    """

    def __init__(self, directory, pid=None, threads=1, max_requests=0):
        self.pid = os.getpid() if pid is None else pid
        self.path = os.path.join(directory, '%d.slot' % self.pid)
        self.threads = threads
        self.max_requests = max_requests
        self.accepted_conn = self.requests = self.exceptions = 0
        self.protocol_errors = self.bytes_sent = self.active = 0
        self.content_length = self.request_start = 0
        self._last = (0, 0, 0.0, 0)     # duration µs, memory, cpu %, status
        self._seq = 0
        self._mm = None
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            # Written whole under a temporary name, then renamed: a reader
            # never sees a partial file.
            tmp = '%d.slot.tmp' % self.pid
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                slot = Slot(self.pid, time.time(), 'starting', threads=threads,
                            max_requests=max_requests)
                os.write(fd, encode_slot(slot))
                self._mm = mmap.mmap(fd, RECORD_SIZE)
                os.rename(tmp, '%d.slot' % self.pid, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                self.close()
                os.unlink(tmp, dir_fd=dfd)
                raise
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    @classmethod
    def from_environ(cls, environ=os.environ, pid=None, threads=1, max_requests=0):
        """The writer supervisord asked for, or None (and one line on stderr
        when the scoreboard is configured but unusable)."""
        base = environ.get(ENV_VAR)
        pool = environ.get('SUPERVISOR_GROUP_NAME')
        if not base or not pool:
            return None
        if threads > 1 and cls is SlotWriter:
            cls = _LockedSlotWriter
        try:
            _check_pool(pool)
            return cls(os.path.join(base, pool), pid, threads, max_requests)
        except ScoreboardError as exc:
            _log('scoreboard disabled: %s' % exc)
        except OSError as exc:
            _log('scoreboard disabled: %s: %s' % (os.path.join(base, pool), _reason(exc)))
        return None

    def _counters(self):
        _COUNTERS.pack_into(self._mm, _COUNTERS_OFFSET, self.accepted_conn,
                            self.requests, self.exceptions, self.protocol_errors,
                            self.bytes_sent, self.max_requests)

    def set_state(self, state):
        """Enter ``state``.  While a request is in flight (another thread's,
        with --threads) only 'running' and 'finishing' are shown."""
        code = WORKER_STATES.index(state)
        if code < 3 and self.active:
            return
        seq = self._seq + 1
        _SEQ.pack_into(self._mm, SEQ_OFFSET, seq)
        self._mm[_STATE_OFFSET] = code
        self._seq = seq + 1
        _SEQ.pack_into(self._mm, SEQ_OFFSET, seq + 1)

    def accepted(self):
        self.accepted_conn += 1
        seq = self._seq + 1
        _SEQ.pack_into(self._mm, SEQ_OFFSET, seq)
        self._counters()
        self._seq = seq + 1
        _SEQ.pack_into(self._mm, SEQ_OFFSET, seq + 1)

    def protocol_error(self):
        """A connection dropped without a complete request (garbage, timeout,
        EOF); the worker is idle again unless a request is in flight."""
        self.protocol_errors += 1
        seq = self._seq + 1
        _SEQ.pack_into(self._mm, SEQ_OFFSET, seq)
        self._counters()
        if not self.active:
            self._mm[_STATE_OFFSET] = 1
        self._seq = seq + 1
        _SEQ.pack_into(self._mm, SEQ_OFFSET, seq + 1)

    def request_started(self, method, uri, content_length, start=None, accepted=False):
        """The app is about to be called; ``start`` (epoch) defaults to now.

        ``accepted=True`` also counts the connection, in the same update: a
        worker does that for a connection's first request.
        """
        self.requests += 1
        self.active += 1
        self.accepted_conn += accepted
        self.content_length = content_length
        self.request_start = int((time.time() if start is None else start) * 1e6)
        try:
            method, uri = method.encode('latin-1'), uri.encode('latin-1')
        except UnicodeEncodeError:
            method, uri = _raw(method, METHOD_SIZE), _raw(uri, URI_SIZE)
        mm, seq, last = self._mm, self._seq + 1, self._last
        _SEQ.pack_into(mm, SEQ_OFFSET, seq)
        # 's' fields truncate what does not fit
        _STARTED.pack_into(mm, _COUNTERS_OFFSET, self.accepted_conn, self.requests,
                           self.exceptions, self.protocol_errors, self.bytes_sent,
                           self.max_requests, self.request_start, last[0],
                           content_length, last[1], last[2], last[3],
                           min(self.active, 0xffff), self.threads, 3, method, uri)
        self._seq = seq + 1
        _SEQ.pack_into(mm, SEQ_OFFSET, seq + 1)

    def request_finished(self, duration_us, cpu_pct, memory, status=0,
                         failed=False, sent=0):
        self.active = active = max(0, self.active - 1)
        self.exceptions += failed
        self.bytes_sent += sent
        self._last = (duration_us, memory, cpu_pct, status)
        mm, seq = self._mm, self._seq + 1
        _SEQ.pack_into(mm, SEQ_OFFSET, seq)
        _FINISHED.pack_into(mm, _COUNTERS_OFFSET, self.accepted_conn, self.requests,
                            self.exceptions, self.protocol_errors, self.bytes_sent,
                            self.max_requests, self.request_start, duration_us,
                            self.content_length, memory, cpu_pct, status,
                            min(active, 0xffff), self.threads, 3 if active else 1)
        self._seq = seq + 1
        _SEQ.pack_into(mm, SEQ_OFFSET, seq + 1)

    def close(self):
        """Unmap; the file stays for supervisord to harvest when we have exited."""
        if self._mm is not None:
            self._mm.close()
            self._mm = None


class _LockedSlotWriter(SlotWriter):
    """For --threads: the same updates, one thread at a time."""

    def __init__(self, *args, **kwargs):
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)


def _locked(method):
    def update(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    update.__name__, update.__doc__ = method.__name__, method.__doc__
    return update


for _name in ('set_state', 'accepted', 'protocol_error', 'request_started',
              'request_finished'):
    setattr(_LockedSlotWriter, _name, _locked(getattr(SlotWriter, _name)))
del _name
