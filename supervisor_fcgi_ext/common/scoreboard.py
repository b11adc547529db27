"""The scoreboard format: one fixed-size binary slot file per worker.

The contract both sides import: each cooperating worker of pool P writes
``<base>/<P>/<pid>.slot`` (worker/slotwriter.py) and supervisord reads it
(supervisord/slots.py).  docs/scoreboard.rst is the same format for writers
in any language.
"""
from __future__ import annotations

import bisect
import os
import stat
import struct
import time
from dataclasses import dataclass

from supervisor_fcgi_ext.common.text import safe_text

__all__ = ['ENV_VAR', 'ScoreboardError', 'NoSlot', 'WORKER_STATES', 'BUSY_STATES',
           'Slot', 'RECORD_SIZE', 'encode_slot', 'decode_slot', 'check_pool_name',
           'check_header', 'field_bytes', 'os_reason', 'slot_path', 'SOURCES',
           'combined_source', 'MARKER', 'has_marker', 'DURATION_BOUNDS_US',
           'DURATION_BUCKETS', 'duration_bucket']

ENV_VAR = 'SUPERVISOR_FCGI_SCOREBOARD'
# In every pool directory the plugin made: the plugin adopts no pool
# directory without it, and a worker writes its slot into none.
MARKER = '.supervisor-fcgi-pool'
WORKER_STATES = ('starting', 'idle', 'reading', 'running', 'finishing')
# A request is in flight in these (the worker is 'active' in PHP-FPM's terms).
BUSY_STATES = frozenset(('reading', 'running', 'finishing'))
_BUSY = frozenset(WORKER_STATES.index(state) for state in BUSY_STATES)
# Where a count comes from: a worker's slot, or connections seen at the socket.
SOURCES = ('exact', 'sampled')

MAGIC = b'SVFCGISB'
VERSION = 3
RECORD_SIZE = 1024
METHOD_SIZE = 16
URI_SIZE = 256
# Offset 0: constant header, then the seqlock counter.  The writer stores the
# counter with one 8-byte store (an item of a 'Q' memoryview): struct.pack_into
# zero-fills its target first, so a reader could see a counter of 0.
_HEADER = struct.Struct('<8sHHIQ')
SEQ_OFFSET = 16
_SEQ_END = SEQ_OFFSET + 8
# Offset 24: the payload (docs/scoreboard.rst), laid out for the writer:
# each update is one pack between the two counter stores, and what a
# request's end changes (last_request_duration .. connections) and what its
# start changes (active .. uri) are contiguous runs that share the 8-byte
# word of active, state and connections.  Then, at HISTOGRAM_OFFSET, the
# request-duration histogram; offsets 520..1023 are reserved.
_LAYOUT = (('last_request_duration', 'q'), ('last_request_cpu', 'd'),
           ('last_request_memory', 'Q'), ('bytes_sent', 'Q'), ('exceptions', 'Q'),
           ('last_status', 'H'), (None, '6x'),
           ('active', 'H'), ('state', 'B'), (None, 'x'), ('connections', 'H'), (None, '2x'),
           ('requests', 'Q'), ('accepted_conn', 'Q'), ('request_start', 'q'),
           ('content_length', 'q'), ('method', '%ds' % METHOD_SIZE),
           ('uri', '%ds' % URI_SIZE),
           ('start_time', 'q'), ('max_requests', 'Q'), ('protocol_errors', 'Q'),
           ('threads', 'H'))
BODY_OFFSET = 24
_NAMES = tuple(name for name, _ in _LAYOUT if name)
_BODY = struct.Struct('<' + ''.join(fmt for _, fmt in _LAYOUT))
assert BODY_OFFSET + _BODY.size == 410
OFFSETS = {}
_prefix = '<'
for _name, _fmt in _LAYOUT:
    if _name:
        OFFSETS[_name] = BODY_OFFSET + struct.calcsize(_prefix)
    _prefix += _fmt
del _prefix, _name, _fmt
# Upper bounds (µs, inclusive: Prometheus' ``le``) of the request-duration
# buckets: Prometheus' default buckets, 5 ms .. 10 s; a last bucket counts
# the requests above 10 s.  A finished request adds 1 to exactly one bucket
# (not cumulative: one store) and its µs to the sum.
DURATION_BOUNDS_US = (5000, 10000, 25000, 50000, 100000, 250000, 500000,
                      1000000, 2500000, 5000000, 10000000)
DURATION_BUCKETS = len(DURATION_BOUNDS_US) + 1
HISTOGRAM_OFFSET = 416
_HISTOGRAM = struct.Struct('<%dQQ' % DURATION_BUCKETS)
OFFSETS['request_duration_counts'] = HISTOGRAM_OFFSET
OFFSETS['request_duration_sum'] = HISTOGRAM_OFFSET + 8 * DURATION_BUCKETS
assert HISTOGRAM_OFFSET + _HISTOGRAM.size == 520 <= RECORD_SIZE
_NO_COUNTS = (0,) * DURATION_BUCKETS


def duration_bucket(us):
    """The index of the bucket a request of ``us`` microseconds counts in."""
    return bisect.bisect_left(DURATION_BOUNDS_US, us)

class ScoreboardError(Exception):
    """A slot or pool directory that cannot be used; the message is one line."""


class NoSlot(ScoreboardError):
    """The worker has written no slot: it does not cooperate, or not yet."""


@dataclass(frozen=True)
class Slot:
    """One worker's slot as read; times are float epoch seconds."""
    pid: int
    start_time: float
    state: str
    accepted_conn: int = 0
    requests: int = 0
    request_method: str = ''          # '' while reading a request
    request_uri: str = ''
    content_length: int = 0
    request_start: float = 0.0        # of the current read or request, else the last; 0: none
    request_duration_us: int = 0      # elapsed while busy, else the last request's
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
    connections: int = 0              # pool connections held open now
    # finished requests per duration bucket (DURATION_BOUNDS_US, then above)
    request_duration_counts: tuple = _NO_COUNTS
    request_duration_sum_us: int = 0  # of the finished requests' wall times


def _us(seconds):
    return int(round(seconds * 1e6))


def _text(raw):
    """A text field as it may travel: XML-RPC, HTML and terminals take it as is
    (a worker's client chose these bytes)."""
    return safe_text(raw.split(b'\0', 1)[0].decode('utf-8', 'replace'))


def field_bytes(text, size):
    """Text as a slot's fixed-size field holds it (params are latin-1 str)."""
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
    fields = dict(
        start_time=_us(slot.start_time), max_requests=slot.max_requests,
        protocol_errors=slot.protocol_errors, threads=slot.threads,
        accepted_conn=slot.accepted_conn, requests=slot.requests,
        request_start=_us(slot.request_start), content_length=slot.content_length,
        method=field_bytes(slot.request_method, METHOD_SIZE),
        uri=field_bytes(slot.request_uri, URI_SIZE), active=slot.active, state=state,
        last_request_duration=slot.last_request_duration_us,
        last_request_memory=slot.last_request_memory,
        last_request_cpu=slot.last_request_cpu, bytes_sent=slot.bytes_sent,
        exceptions=slot.exceptions, last_status=slot.last_status,
        connections=slot.connections)
    if len(slot.request_duration_counts) != DURATION_BUCKETS:
        raise ScoreboardError('%d duration buckets, not %d'
                              % (len(slot.request_duration_counts), DURATION_BUCKETS))
    body = _BODY.pack(*[fields[name] for name in _NAMES])
    record = (_HEADER.pack(MAGIC, VERSION, RECORD_SIZE, slot.pid, seq) + body).ljust(
        HISTOGRAM_OFFSET, b'\0')
    record += _HISTOGRAM.pack(*slot.request_duration_counts, slot.request_duration_sum_us)
    return record.ljust(RECORD_SIZE, b'\0')


def check_header(data, pid):
    """(pid, seq) of a record whose constant header is right.  A slot of
    another version says so, whatever its size (a version 2 slot is 512
    bytes)."""
    if len(data) < _HEADER.size or len(data) < RECORD_SIZE and data[:8] != MAGIC:
        raise ScoreboardError('truncated slot (%d of %d bytes)' % (len(data), RECORD_SIZE))
    magic, version, size, rpid, seq = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ScoreboardError('not a slot file (bad magic)')
    if version != VERSION or size != RECORD_SIZE:
        raise ScoreboardError('unsupported slot format version %d size %d' % (version, size))
    if len(data) < RECORD_SIZE:
        raise ScoreboardError('truncated slot (%d of %d bytes)' % (len(data), RECORD_SIZE))
    if pid is not None and rpid != pid:
        raise ScoreboardError('slot belongs to pid %d, not %d' % (rpid, pid))
    return rpid, seq


def decode_slot(data, now=None, pid=None):
    """The Slot in ``data`` (a consistent record); ScoreboardError when it is not one."""
    rpid, seq = check_header(data, pid)
    if seq & 1:
        raise ScoreboardError('slot is being written')
    f = dict(zip(_NAMES, _BODY.unpack_from(data, BODY_OFFSET)))
    state = f['state']
    if state >= len(WORKER_STATES):
        raise ScoreboardError('bad worker state %d' % state)
    *counts, duration_sum = _HISTOGRAM.unpack_from(data, HISTOGRAM_OFFSET)
    duration = last_duration = f['last_request_duration']
    if state in _BUSY and f['request_start'] > 0:
        now_us = _us(time.time() if now is None else now)
        duration = max(0, now_us - f['request_start'])
    slot = _new(Slot)     # a frozen dataclass's __init__: half of a decode
    _set(slot, '__dict__', {
        'pid': rpid, 'start_time': f['start_time'] / 1e6, 'state': WORKER_STATES[state],
        'accepted_conn': f['accepted_conn'], 'requests': f['requests'],
        'request_method': _text(f['method']), 'request_uri': _text(f['uri']),
        'content_length': f['content_length'], 'request_start': f['request_start'] / 1e6,
        'request_duration_us': duration, 'last_request_duration_us': last_duration,
        'last_request_cpu': f['last_request_cpu'],
        'last_request_memory': f['last_request_memory'],
        'last_status': f['last_status'], 'active': f['active'], 'threads': f['threads'],
        'max_requests': f['max_requests'], 'exceptions': f['exceptions'],
        'protocol_errors': f['protocol_errors'], 'bytes_sent': f['bytes_sent'],
        'connections': f['connections'], 'request_duration_counts': tuple(counts),
        'request_duration_sum_us': duration_sum})
    return slot


_new, _set = object.__new__, object.__setattr__


def check_pool_name(pool):
    """A pool name is one path component (it names a directory)."""
    if not isinstance(pool, str) or not pool or pool in ('.', '..') \
            or '/' in pool or '\0' in pool or len(pool.encode('utf-8', 'replace')) > 255:
        raise ScoreboardError('bad pool name %r' % (pool,))


def os_reason(exc):
    """An OSError's one-line reason, without errno noise."""
    return exc.strerror or str(exc)


def slot_path(base, pool, pid):
    check_pool_name(pool)
    if not isinstance(pid, int) or pid <= 0:
        raise ScoreboardError('bad pid %r' % (pid,))
    return os.path.join(base, pool, '%d.slot' % pid)


def combined_source(sources):
    """The source of a total made of counts from ``sources``: the one source
    they share, 'mixed' when they differ, 'exact' when there are none (no
    count to doubt)."""
    kinds = set(sources)
    if len(kinds) > 1:
        return 'mixed'
    return kinds.pop() if kinds else 'exact'


def has_marker(dfd, uid):
    """The directory open as ``dfd`` holds our marker as ``uid`` made it: a
    regular file of that user with one link (not a hard link to another of
    its files), which only ``uid`` can have put in a directory it made."""
    try:
        st = os.stat(MARKER, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == uid and st.st_nlink == 1
