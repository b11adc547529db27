"""The worker's side of the scoreboard: its slot file, and the updates.

A worker owns ``<base>/<pool>/<pid>.slot`` (common/scoreboard.py has the format,
supervisord/slots.py supervisord's reader; docs/scoreboard.rst the contract).  SlotWriter makes
every update in Python; CSlotWriter makes the two of every request in C
(_slotwriter.c), where that extension is built, and fences the others'
seqlock stores.  from_environ picks the C writer where it is built (also for
--threads, behind a lock), else the Python one where plain stores keep their
order (x86), else none: see ordering.py.
"""
from __future__ import annotations

import bisect
import os
import resource
import struct
import sys
import threading
import time

from supervisor_fcgi_ext.common.scoreboard import (
    DURATION_BOUNDS_US, DURATION_BUCKETS, ENV_VAR, METHOD_SIZE, OFFSETS, RECORD_SIZE,
    SEQ_OFFSET, URI_SIZE, WORKER_STATES, ScoreboardError, check_pool_name,
    field_bytes, os_reason,
)
from supervisor_fcgi_ext.worker import log
from supervisor_fcgi_ext.worker.slotfile import create_slot
from supervisor_fcgi_ext.worker.ordering import choose_writer

__all__ = ['SlotWriter', 'CSlotWriter', 'request_uri']

# last_request_duration .. connections, and active .. uri ('s' fields
# truncate, and NUL-pad what is shorter).
_FINISHED = struct.Struct('<qdQQQH6xHBxH2x')
_STARTED = struct.Struct('<HBxH2xQQqq%ds%ds' % (METHOD_SIZE, URI_SIZE))
_FINISHED_OFFSET = OFFSETS['last_request_duration']
_STARTED_OFFSET = OFFSETS['active']
assert _FINISHED_OFFSET + _FINISHED.size == _STARTED_OFFSET + 8
assert _STARTED_OFFSET + _STARTED.size == OFFSETS['start_time']
# Indexes of 8-byte words in the record, for single stores.
_SEQ_WORD = SEQ_OFFSET // 8
_STATE_WORD = OFFSETS['active'] // 8
_ACCEPTED_WORD = OFFSETS['accepted_conn'] // 8
_ERRORS_WORD = OFFSETS['protocol_errors'] // 8
_COUNTS_WORD = OFFSETS['request_duration_counts'] // 8
_SUM_WORD = OFFSETS['request_duration_sum'] // 8
_IDLE, _READING, _RUNNING = 1, 2, 3
_pack_started = _STARTED.pack_into
_pack_finished = _FINISHED.pack_into
# request_start, content_length, method: a kept-alive connection's next read
_pack_reading = struct.Struct('<qq%ds' % METHOD_SIZE).pack_into
_READING_OFFSET = OFFSETS['request_start']
_URI = OFFSETS['uri']
_time_ns = time.time_ns      # ints: no float-to-int conversions
_bucket = bisect.bisect_left
_FIRST_BOUND = DURATION_BOUNDS_US[0]     # most requests: no search
# CPU time and peak RSS are read after a request of this wall time (ns) or
# more, and every (mask + 1)th request.
_SAMPLE_WALL = 10_000_000
_SAMPLE_MASK = 15
_RUSAGE_THREAD = getattr(resource, 'RUSAGE_THREAD', resource.RUSAGE_SELF)


def request_uri(params):
    """REQUEST_URI, or what it would be when the web server sent none."""
    uri = params.get('REQUEST_URI')
    if uri is None:
        uri = params.get('SCRIPT_NAME', '') + params.get('PATH_INFO', '')
        if params.get('QUERY_STRING'):
            uri += '?' + params['QUERY_STRING']
    return uri


class _SlotUpdates:
    """What every writer shares: the file, and the updates that are not made
    for every request (the per-request two are each writer's own).  The
    state lives in attributes of these names: slots of SlotWriter, members
    of the C writer."""
    __slots__ = ()
    kind = 'Python'        # the writer named in the worker's start-up line

    def _open(self, directory, pid, threads, max_requests):
        self.pid = os.getpid() if pid is None else pid
        self.path = os.path.join(directory, '%d.slot' % self.pid)
        self.threads = threads
        self.max_requests = max_requests
        return create_slot(directory, self.pid, threads, max_requests)

    @classmethod
    def from_environ(cls, environ=os.environ, pid=None, threads=1, max_requests=0,
                     use_c=True):
        """The writer supervisord asked for, or None (and one line on stderr
        when the scoreboard is configured but unusable).  Called on
        SlotWriter, it picks the writer choose_writer names (``use_c``
        False: the Python one, where it may), locked for threads."""
        base = environ.get(ENV_VAR)
        pool = environ.get('SUPERVISOR_GROUP_NAME')
        if not base or not pool:
            return None
        if cls is SlotWriter:
            kind, note = choose_writer(use_c, CSlotWriter is not None)
            if note:
                log(note)
            if kind is None:
                return None
            cls = {('C', False): CSlotWriter, ('C', True): _LockedCSlotWriter,
                   ('Python', False): SlotWriter,
                   ('Python', True): _LockedSlotWriter}[kind, threads > 1]
        try:
            check_pool_name(pool)
            return cls(os.path.join(base, pool), pid, threads, max_requests)
        except ScoreboardError as exc:
            log('scoreboard disabled: %s' % exc)
        except OSError as exc:
            log('scoreboard disabled: %s: %s' % (os.path.join(base, pool), os_reason(exc)))
        return None

    def ready(self):
        """The worker accepts from now on: idle, and the CPU count of its
        first request starts here (not with the app's import)."""
        self._sample(0)
        self.set_state('idle')

    def set_state(self, state):
        """Enter 'idle' or 'finishing'.  While a request is in flight
        (another thread's, with --threads) idle is not shown."""
        code = WORKER_STATES.index(state)
        if code < _RUNNING and self.active:
            return
        self._seq_open()
        self._words[_STATE_WORD] = self.active | code << 16 | self.connections << 32
        self._seq_close()

    def reading(self, opened=False, start=None):
        """The worker waits for a request on a connection (``opened``: one
        just accepted, counted now).  Unless another thread's request is in
        flight, the slot shows 'reading' since ``start`` (epoch, default now),
        with no method, URI or length: the last request's are gone."""
        if opened:
            self.accepted_conn += 1
            self.connections += 1
        self._seq_open()
        if self.active:
            words = self._words
            words[_ACCEPTED_WORD] = self.accepted_conn
            words[_STATE_WORD] = self.active | _RUNNING << 16 | self.connections << 32
        else:
            _pack_started(self._mm, _STARTED_OFFSET, 0, _READING, self.connections,
                          self.requests, self.accepted_conn,
                          int((time.time() if start is None else start) * 1e6), 0, b'', b'')
        self._seq_close()

    def _sample(self, window):
        """Read this thread's CPU time and the peak RSS: the CPU share is
        the CPU used since the last reading over ``window``, the wall time
        of the requests since.  One system call that costs as much as the
        rest of a request's updates: made every 16th request and after a
        request of _SAMPLE_WALL or more, whose figure it then dominates."""
        ru = resource.getrusage(_RUSAGE_THREAD)
        cpu = ru.ru_utime + ru.ru_stime
        self._cpu_pct = 1e11 * (cpu - self._cpu) / window if window > 0 else 0.0
        self._cpu = cpu
        self._rss = ru.ru_maxrss * 1024

    def closed(self, counted=True, protocol_error=False):
        """A connection is closed.  ``counted=False``: it never showed in the
        slot (no update for it yet), so it is counted as accepted now.
        ``protocol_error``: it was dropped without a complete request
        (garbage, timeout, EOF).  The worker is idle unless a request is
        in flight."""
        if not counted:
            self.accepted_conn += 1
        elif self.connections:
            self.connections -= 1
        self._seq_open()
        words = self._words
        words[_ACCEPTED_WORD] = self.accepted_conn
        if protocol_error:
            self.protocol_errors += 1
            words[_ERRORS_WORD] = self.protocol_errors
        words[_STATE_WORD] = (self.active | (_RUNNING if self.active else _IDLE) << 16
                              | self.connections << 32)
        self._seq_close()

    def close(self):
        """Unmap; the file stays for supervisord to harvest when we have exited."""
        if self._words is not None:
            self._words.release()      # else the mmap refuses to close
            self._words = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None


class SlotWriter(_SlotUpdates):
    """The worker's side in Python: owns ``<pid>.slot`` and updates it
    through an mmap.

    Each update is one pack between the odd and the even store of the
    seqlock counter.  The writer times its requests itself (wall, CPU of
    the calling thread, peak RSS), so a request costs the worker two calls.
    Not thread-safe: from_environ(threads > 1) returns a locked subclass.
    CSlotWriter makes the same two calls in C, where it is built.  The
    stores are plain: right only where the CPU keeps them in order (see
    stores_ordered), where from_environ alone uses this writer.
    """
    __slots__ = ('pid', 'path', 'threads', 'max_requests', 'accepted_conn', 'requests',
                 'exceptions', 'protocol_errors', 'bytes_sent', 'active', 'connections',
                 '_seq', '_mm', '_words', '_start', '_cpu', '_cpu_pct', '_window', '_rss',
                 '_counts', '_duration_sum')

    def __init__(self, directory, pid=None, threads=1, max_requests=0):
        self.accepted_conn = self.requests = self.exceptions = 0
        self.protocol_errors = self.bytes_sent = self.active = self.connections = 0
        self._seq = self._rss = 0
        self._start = self._window = 0
        self._cpu = self._cpu_pct = 0.0
        self._counts = [0] * DURATION_BUCKETS
        self._duration_sum = 0
        self._mm = self._open(directory, pid, threads, max_requests)
        # 8-byte items: each assignment is one aligned 8-byte store
        self._words = memoryview(self._mm).cast('Q')

    def _seq_open(self):
        """The odd seqlock store, before an update's stores (the C writer's
        fences them)."""
        seq = self._seq + 2
        self._seq = seq
        self._words[_SEQ_WORD] = seq - 1

    def _seq_close(self):
        self._words[_SEQ_WORD] = self._seq

    # The two updates of every request: kept to few bytecodes on purpose.

    def request_started(self, params, accepted=False, start=None):
        """The app is about to be called, now or at ``start`` (epoch), for
        the request with these FastCGI ``params`` (method, URI, length).

        ``accepted=True`` also counts the connection, in the same update: a
        worker does that for a connection's first request when it did not
        have to wait for it.
        """
        start = _time_ns() if start is None else int(start * 1e9)
        method, uri = params.get('REQUEST_METHOD', ''), request_uri(params)
        length = params.get('CONTENT_LENGTH')
        # ASCII digits, 18 at most: what fits the slot's 64 bits
        length = int(length) if length and length.isascii() and length.isdigit() \
            and len(length) < 19 else 0
        self._start = start
        self.requests += 1
        self.active = active = self.active + 1
        if accepted:
            self.accepted_conn += 1
            self.connections += 1
        try:
            method, uri = method.encode('latin-1'), uri.encode('latin-1')
        except UnicodeEncodeError:
            method, uri = field_bytes(method, METHOD_SIZE), field_bytes(uri, URI_SIZE)
        seq = self._seq + 2
        self._seq = seq
        words = self._words
        words[_SEQ_WORD] = seq - 1
        _pack_started(self._mm, _STARTED_OFFSET, active, _RUNNING, self.connections,
                      self.requests, self.accepted_conn, start // 1000,
                      length, method, uri)
        words[_SEQ_WORD] = seq

    def request_finished(self, status=0, failed=False, sent=0, closing=False):
        """The request is answered: its wall time, counted in the duration
        histogram too, and (see _sample) the CPU share and peak RSS.  ``closing``: its connection closes now,
        uncounted in the same update; else the worker reads the next request
        on it from now on, shown in the same update too."""
        now = _time_ns()
        wall = now - self._start
        us = wall // 1000 if wall > 0 else 0     # the clock may step back
        bucket = _bucket(DURATION_BOUNDS_US, us) if us > _FIRST_BOUND else 0
        count = self._counts[bucket] + 1
        self._counts[bucket] = count
        # a u64 that wraps, as the C writer's does (584,000 years of requests)
        duration_sum = self._duration_sum = (self._duration_sum + us) & 0xFFFFFFFFFFFFFFFF
        window = self._window + wall
        if wall >= _SAMPLE_WALL or not self.requests & _SAMPLE_MASK:
            self._sample(window)
            window = 0
        self._window = window
        active = self.active - 1 if self.active else 0
        self.active = active
        if failed:
            self.exceptions += 1
        self.bytes_sent += sent
        if closing and self.connections:
            self.connections -= 1
        state = _RUNNING if active else _IDLE if closing else _READING
        mm, seq = self._mm, self._seq + 2
        self._seq = seq
        words = self._words
        words[_SEQ_WORD] = seq - 1
        _pack_finished(mm, _FINISHED_OFFSET, us, self._cpu_pct, self._rss,
                       self.bytes_sent, self.exceptions, status, active, state,
                       self.connections)
        words[_COUNTS_WORD + bucket] = count
        words[_SUM_WORD] = duration_sum
        if state == _READING:
            _pack_reading(mm, _READING_OFFSET, now // 1000, 0, b'')
            mm[_URI] = 0
        words[_SEQ_WORD] = seq


class _Locked:
    """For --threads: the same updates, one thread at a time; a request's
    start and its thread's CPU readings are kept per thread."""
    __slots__ = ()

    def __init__(self, *args, **kwargs):
        self._lock = threading.Lock()
        self._local = threading.local()
        super().__init__(*args, **kwargs)

    def request_started(self, *args, **kwargs):
        with self._lock:
            super().request_started(*args, **kwargs)
            self._local.start = self._start

    def request_finished(self, *args, **kwargs):
        local = self._local
        with self._lock:
            # a new pool thread has used next to no CPU before
            self._start = local.start
            self._cpu, self._cpu_pct, self._window = getattr(local, 'cpu', (0.0, 0.0, 0))
            super().request_finished(*args, **kwargs)
            local.cpu = self._cpu, self._cpu_pct, self._window

    def set_state(self, state):
        with self._lock:
            super().set_state(state)

    def reading(self, opened=False, start=None):
        with self._lock:
            super().reading(opened, start)

    def closed(self, counted=True, protocol_error=False):
        with self._lock:
            super().closed(counted, protocol_error)


class _LockedSlotWriter(_Locked, SlotWriter):
    __slots__ = ('_lock', '_local')


try:
    from supervisor_fcgi_ext.worker import _slotwriter
except ImportError:       # not built: no compiler or no Python headers
    _slotwriter = None


def _c_writer_fits():
    """The C extension is built, and for this file's layout and byte order."""
    if _slotwriter is None or sys.byteorder != 'little':
        return False
    layout = dict(OFFSETS, seq=SEQ_OFFSET, record_size=RECORD_SIZE)
    return _slotwriter.DURATION_BOUNDS_US == DURATION_BOUNDS_US and all(
        layout.get(name) == value for name, value in _slotwriter.LAYOUT.items())


if _c_writer_fits():
    class CSlotWriter(_SlotUpdates, _slotwriter.Writer):
        """SlotWriter with its two per-request updates (request_started,
        request_finished) made in C: same arguments, same slot."""
        __slots__ = ('pid', 'path', 'threads', 'max_requests')
        kind = 'C'

        def __init__(self, directory, pid=None, threads=1, max_requests=0):
            _slotwriter.Writer.__init__(self, self._open(directory, pid, threads, max_requests))
            self._words = memoryview(self._mm).cast('Q')

        def close(self):
            self._release()           # the C side's view of the mmap
            _SlotUpdates.close(self)

    class _LockedCSlotWriter(_Locked, CSlotWriter):
        __slots__ = ('_lock', '_local')
else:
    CSlotWriter = _LockedCSlotWriter = None
