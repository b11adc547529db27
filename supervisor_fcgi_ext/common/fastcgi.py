"""The FastCGI record codec: bytes in, records out; records to bytes.

No sockets here (h11's model): the worker (worker/connection.py), the lab's
client (lab/fcgiclient.py) and the tests frame records with these functions,
so the protocol is tested in memory and the socket code against real peers.

Names and values of params are bytes on the wire.  ``to_bytes`` is the one
conversion of text to them: latin-1, byte for byte, the inverse of what flup
(and so fcgi-worker) hands a WSGI app, whose environ holds latin-1 ``str``.
Text that is not latin-1 is refused: encode it yourself (UTF-8 URIs, say).

The worker's per-request functions (decode_params, frame_stream,
RecordReader.next_request) run in C when common/_fastcgi.c is built and
FCGI_PURE_PYTHON is not set in the environment (``CODEC`` says which), with
the same results; the Python here is the fallback and the reference.
"""
from __future__ import annotations

import os
import struct
from typing import NamedTuple

try:
    from supervisor_fcgi_ext.common import _fastcgi as C_CODEC
except ImportError:          # not built: no compiler or Python headers
    C_CODEC = None
# the codec in use: the C one unless it is missing or turned off
_fastcgi = None if os.environ.get('FCGI_PURE_PYTHON') else C_CODEC

__all__ = [
    'VERSION', 'BEGIN_REQUEST', 'ABORT_REQUEST', 'END_REQUEST', 'PARAMS', 'STDIN',
    'STDOUT', 'STDERR', 'DATA', 'GET_VALUES', 'GET_VALUES_RESULT', 'UNKNOWN_TYPE',
    'NULL_REQUEST_ID', 'RESPONDER', 'KEEP_CONN', 'REQUEST_COMPLETE', 'CANT_MPX_CONN',
    'OVERLOADED', 'UNKNOWN_ROLE', 'PROTOCOL_STATUS_NAMES', 'HEADER', 'MAX_CONTENT',
    'ProtocolError', 'Record', 'RecordReader', 'encode_record', 'encode_stream',
    'frame_stream', 'encode_pair', 'encode_params', 'decode_pairs', 'decode_params',
    'begin_request', 'parse_begin_request', 'end_request', 'parse_end_request',
    'unknown_type', 'to_bytes', 'CODEC', 'C_CODEC', 'decode_params_py', 'frame_stream_py',
]

VERSION = 1
(BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA,
 GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE) = range(1, 12)
NULL_REQUEST_ID = 0
RESPONDER = 1
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = range(4)
PROTOCOL_STATUS_NAMES = {CANT_MPX_CONN: 'FCGI_CANT_MPX_CONN', OVERLOADED: 'FCGI_OVERLOADED',
                         UNKNOWN_ROLE: 'FCGI_UNKNOWN_ROLE'}

HEADER = struct.Struct('!BBHHBx')      # version, type, request id, length, padding
# A record's content is at most 65535 bytes; a multiple of 8 needs no padding.
MAX_CONTENT = 65528
_PAD = bytes(8)
_BEGIN = struct.Struct('!HB5x')        # role, flags
_END = struct.Struct('!LB3x')          # app status, protocol status
_UNKNOWN = struct.Struct('!B7x')       # the type not understood
_LONG = struct.Struct('!L')


class ProtocolError(ValueError):
    """The bytes are not FastCGI; the message is one line."""


class Record(NamedTuple):
    type: int
    request_id: int
    content: bytes


_new_record = tuple.__new__      # Record(...) without its Python-level __new__


def encode_record(kind, request_id, content=b''):
    """One record, padded to a multiple of 8 bytes; content of 65535 bytes at most."""
    if len(content) > 65535:
        raise ValueError('record content of %d bytes: 65535 at most' % len(content))
    padding = -len(content) & 7
    return b''.join((HEADER.pack(VERSION, kind, request_id, len(content), padding),
                     content, _PAD[:padding]))


def encode_stream(kind, request_id, data, end=False):
    """``data`` as records of ``kind`` (none when empty), as a list of byte
    strings to join or send; ``end``: then the empty record that ends the
    stream."""
    view = memoryview(data)
    out = []
    for start in range(0, len(view), MAX_CONTENT):
        chunk = view[start:start + MAX_CONTENT]
        padding = -len(chunk) & 7
        out.append(HEADER.pack(VERSION, kind, request_id, len(chunk), padding))
        out.append(chunk)
        if padding:
            out.append(_PAD[:padding])
    if end:
        out.append(HEADER.pack(VERSION, kind, request_id, 0, 0))
    return out


def frame_stream_py(kind, request_id, data, end=False):
    """encode_stream's records as one bytes object."""
    return b''.join(encode_stream(kind, request_id, data, end))


class RecordReader:
    """Records from a byte stream fed in pieces of any size.

    ``feed(data)`` adds what was received; ``next_record()`` is the next
    complete Record, or None until more is fed (``missing`` bytes at least).
    A record of another version raises ProtocolError.
    """

    def __init__(self):
        self._buf = b''
        self._pos = 0

    def feed(self, data):
        if self._pos:
            self._buf = self._buf[self._pos:] + data
            self._pos = 0
        else:
            self._buf += data

    @property
    def buffered(self):
        """Bytes fed and not yet returned in a record."""
        return len(self._buf) - self._pos

    @property
    def missing(self):
        """Bytes still to feed before the next record is complete (0: it is)."""
        have = len(self._buf) - self._pos
        if have < 8:
            return 8 - have
        _, _, _, length, padding = HEADER.unpack_from(self._buf, self._pos)
        return max(8 + length + padding - have, 0)

    def peek(self):
        """(type, request id) of the next record if it is complete, else None."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 8:
            return None
        _, kind, request_id, length, padding = HEADER.unpack_from(buf, pos)
        return (kind, request_id) if len(buf) - pos >= 8 + length + padding else None

    def next_record(self):
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 8:
            return None
        version, kind, request_id, length, padding = HEADER.unpack_from(buf, pos)
        if version != VERSION:
            raise ProtocolError('bad record version %d' % version)
        end = pos + 8 + length
        if len(buf) < end + padding:
            return None
        self._pos = end + padding
        return _new_record(Record, (kind, request_id, buf[pos + 8:end]))

    def next_request(self, limit):
        """A whole request's opening, taken at once when the buffer holds it
        as nginx sends it (BEGIN_REQUEST, PARAMS to their end in ``limit``
        bytes at most, the STDIN records of that request that follow):
        (request_id, role, flags, params as str, param_bytes, [stdin
        contents]).  None otherwise, and always without the C codec: then
        next_record() takes the records one by one, and decides about bad ones."""
        if _fastcgi is None:
            return None
        got = _fastcgi.parse_request(self._buf, self._pos, limit)
        if got is None:
            return None
        self._pos = got[0]
        return got[1:]


def _length(size):
    return bytes((size,)) if size < 128 else _LONG.pack(size | 0x80000000)


def encode_pair(name, value):
    """One name-value pair (bytes, or text for to_bytes)."""
    name, value = to_bytes(name), to_bytes(value)
    return b''.join((_length(len(name)), _length(len(value)), name, value))


def encode_params(params):
    """A mapping's pairs, the content of PARAMS (or GET_VALUES) records."""
    return b''.join(encode_pair(name, value) for name, value in params.items())


def decode_pairs(content):
    """[(name, value)] as bytes from a PARAMS or GET_VALUES content;
    ProtocolError when a length runs past its end.  (The worker's hot path:
    unrolled on purpose.)"""
    pairs, pos, end = [], 0, len(content)
    try:
        while pos < end:
            name_len = content[pos]
            if name_len < 128:
                pos += 1
            else:
                name_len = _LONG.unpack_from(content, pos)[0] & 0x7fffffff
                pos += 4
            value_len = content[pos]
            if value_len < 128:
                pos += 1
            else:
                value_len = _LONG.unpack_from(content, pos)[0] & 0x7fffffff
                pos += 4
            name_end = pos + name_len
            value_end = name_end + value_len
            if value_end > end:
                raise ProtocolError('name-value pair of %d bytes past the end of its record'
                                    % (value_end - pos))
            pairs.append((content[pos:name_end], content[name_end:value_end]))
            pos = value_end
    except (IndexError, struct.error):
        raise ProtocolError('name-value pair cut short at byte %d' % pos) from None
    return pairs


def decode_params_py(content, into):
    """The pairs of a PARAMS content stored in the dict ``into`` as latin-1
    str, what flup hands a WSGI app; ProtocolError (nothing stored) when a
    length runs past its end."""
    into.update([(name.decode('latin-1'), value.decode('latin-1'))
                 for name, value in decode_pairs(content)])


def begin_request(role=RESPONDER, flags=0):
    """The content of a BEGIN_REQUEST record."""
    return _BEGIN.pack(role, flags)


def parse_begin_request(content):
    """(role, flags) of a BEGIN_REQUEST content."""
    if len(content) != _BEGIN.size:
        raise ProtocolError('FCGI_BEGIN_REQUEST body of %d bytes, not 8' % len(content))
    return _BEGIN.unpack(content)


def end_request(app_status=0, protocol_status=REQUEST_COMPLETE):
    """The content of an END_REQUEST record."""
    return _END.pack(app_status, protocol_status)


def parse_end_request(content):
    """(app status, protocol status) of an END_REQUEST content."""
    if len(content) != _END.size:
        raise ProtocolError('FCGI_END_REQUEST body of %d bytes, not 8' % len(content))
    return _END.unpack(content)


def unknown_type(kind):
    """The content of the UNKNOWN_TYPE answer to a management record of ``kind``."""
    return _UNKNOWN.pack(kind)


def to_bytes(value):
    """Bytes as they are; text as latin-1 (the bytes flup decoded it from).
    ValueError in one line for text beyond latin-1, TypeError for others."""
    if isinstance(value, str):
        try:
            return value.encode('latin-1')
        except UnicodeEncodeError:
            raise ValueError('%.60r is not latin-1: FastCGI sends bytes, encode the text '
                             'first' % value) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raise TypeError('FastCGI sends bytes or latin-1 text, not %s' % type(value).__name__)


if C_CODEC is not None:
    C_CODEC.set_protocol_error(ProtocolError)
# the functions in use, C_CODEC's where it is on (the same results)
CODEC = 'Python' if _fastcgi is None else 'C'
decode_params = decode_params_py if _fastcgi is None else _fastcgi.decode_params
frame_stream = frame_stream_py if _fastcgi is None else _fastcgi.frame_stream
