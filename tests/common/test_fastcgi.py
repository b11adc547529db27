"""The FastCGI codec in memory: framing in pieces of any size, padding, the
name-value pairs, the request and answer bodies, and the worker's protocol
cases (garbage, oversized params, GET_VALUES, keep-alive, aborts) as the
bytes a peer sends.  The same cases over real sockets: tests/worker."""
from __future__ import annotations

import random

import pytest
from flup.server import fcgi_base

from supervisor_fcgi_ext.common import fastcgi
from supervisor_fcgi_ext.common.fastcgi import (
    ABORT_REQUEST, BEGIN_REQUEST, GET_VALUES, KEEP_CONN, PARAMS, STDIN, STDOUT,
    ProtocolError, Record, RecordReader, decode_pairs, encode_pair, encode_params,
    encode_record, encode_stream, to_bytes,
)


def records_of(data, piece=None):
    """Every record in ``data``, fed ``piece`` bytes at a time (random when None)."""
    reader, out, pos = RecordReader(), [], 0
    rng = random.Random(len(data))
    while pos < len(data):
        size = piece or rng.randint(1, 300)
        reader.feed(data[pos:pos + size])
        pos += size
        rec = reader.next_record()
        while rec is not None:
            out.append(rec)
            rec = reader.next_record()
    assert reader.buffered == 0 and reader.missing == 8
    return out


def test_records_come_out_whole_however_the_bytes_are_cut():
    request = b''.join([encode_record(BEGIN_REQUEST, 7, fastcgi.begin_request(flags=KEEP_CONN))]
                       + encode_stream(PARAMS, 7, encode_params({'A': 'b' * 300}), end=True)
                       + encode_stream(STDIN, 7, bytes(range(256)) * 600, end=True))
    for piece in (1, 7, 8, 9, 65536, None):
        recs = records_of(request, piece)
        assert [(r.type, r.request_id) for r in recs] == \
            [(BEGIN_REQUEST, 7), (PARAMS, 7), (PARAMS, 7)] + [(STDIN, 7)] * 4
        assert b''.join(r.content for r in recs if r.type == STDIN) == bytes(range(256)) * 600
        assert fastcgi.parse_begin_request(recs[0].content) == (fastcgi.RESPONDER, KEEP_CONN)
        assert decode_pairs(recs[1].content) == [(b'A', b'b' * 300)]


def test_records_are_padded_to_8_and_split_at_the_content_limit():
    assert encode_record(STDOUT, 1, b'abc') == b'\x01\x06\x00\x01\x00\x03\x05\x00abc' + bytes(5)
    assert len(encode_record(STDOUT, 1, b'x' * 8)) == 16
    chunks = encode_stream(STDOUT, 1, b'y' * 200000)
    recs = records_of(b''.join(chunks), 65536)
    assert [len(r.content) for r in recs] == [65528, 65528, 65528, 3416]
    assert encode_stream(STDOUT, 1, b'') == []
    assert encode_stream(STDOUT, 1, b'', end=True) == [fastcgi.HEADER.pack(1, STDOUT, 1, 0, 0)]
    with pytest.raises(ValueError, match='65535 at most'):
        encode_record(STDOUT, 1, bytes(65536))


def test_the_codec_reads_what_flup_writes():
    # flup writes a record as header, content and padding in separate sends
    class Sink:
        data = b''

        def fileno(self):      # flup logs it
            return -1

        def send(self, chunk):
            self.data += chunk
            return len(chunk)
    sink = Sink()
    rec = fcgi_base.Record(STDOUT, 3)
    rec.contentData = b'hello'
    rec.contentLength = 5
    rec.write(sink)
    assert records_of(sink.data) == [Record(STDOUT, 3, b'hello')]
    assert encode_pair(b'n' * 200, b'v') == fcgi_base.encode_pair(b'n' * 200, b'v')


def test_pairs_round_trip_with_short_and_long_lengths():
    pairs = {b'': b'', b'a': b'1', b'n' * 127: b'v' * 128, b'N' * 128: b'', b'big': b'z' * 70000}
    content = encode_params(pairs)
    assert decode_pairs(content) == list(pairs.items())
    assert content.startswith(b'\x00\x00\x01\x01a1')


@pytest.mark.parametrize('content', [
    b'\x05', b'\x80\x00\x00', b'\x01\x80\x00', b'\x05\x00abc', b'\x01\x05ab',
    b'\x80\x00\x00\x05\x00ab', encode_pair(b'a', b'b') + b'\x03',
])
def test_a_pair_cut_short_is_a_protocol_error(content):
    with pytest.raises(ProtocolError) as info:
        decode_pairs(content)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('data, message', [
    (b'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'bad record version 71'),     # http to the port
    (b'\x09' + encode_record(BEGIN_REQUEST, 1)[1:], 'bad record version 9'),
])
def test_garbage_is_refused_at_its_first_header(data, message):
    reader = RecordReader()
    reader.feed(data[:8])
    with pytest.raises(ProtocolError, match=message):
        reader.next_record()


def test_a_partial_record_waits_and_says_how_much_is_missing():
    reader = RecordReader()
    data = encode_record(STDIN, 1, b'12345')
    reader.feed(data[:3])
    assert (reader.next_record(), reader.peek(), reader.missing, reader.buffered) == \
        (None, None, 5, 3)
    reader.feed(data[3:10])
    assert (reader.next_record(), reader.peek(), reader.missing) == (None, None, 6)
    reader.feed(data[10:] + data[:8])
    assert reader.peek() == (STDIN, 1)
    assert reader.next_record() == Record(STDIN, 1, b'12345')
    assert (reader.peek(), reader.missing, reader.buffered) == (None, 8, 8)


@pytest.mark.parametrize('content', [b'', b'\x00', bytes(9)])
def test_a_begin_or_end_body_of_the_wrong_size_is_a_protocol_error(content):
    with pytest.raises(ProtocolError, match='FCGI_BEGIN_REQUEST body of %d bytes' % len(content)):
        fastcgi.parse_begin_request(content)
    with pytest.raises(ProtocolError, match='FCGI_END_REQUEST body of %d bytes' % len(content)):
        fastcgi.parse_end_request(content)


def test_oversized_params_arrive_as_records_of_at_most_65535():
    # 20 records of 65000 bytes: what the worker counts against its limit
    data = encode_record(BEGIN_REQUEST, 1, fastcgi.begin_request()) \
        + encode_record(PARAMS, 1, b'x' * 65000) * 20
    recs = records_of(data)
    assert sum(len(r.content) for r in recs if r.type == PARAMS) == 1300000


def test_management_records_and_aborts():
    ask = encode_record(GET_VALUES, fastcgi.NULL_REQUEST_ID,
                        encode_params({'FCGI_MAX_CONNS': '', 'FCGI_MPXS_CONNS': ''}))
    rec, = records_of(ask)
    assert (rec.type, rec.request_id) == (GET_VALUES, 0)
    assert [name for name, _ in decode_pairs(rec.content)] == [b'FCGI_MAX_CONNS',
                                                                b'FCGI_MPXS_CONNS']
    assert records_of(encode_record(ABORT_REQUEST, 5)) == [Record(ABORT_REQUEST, 5, b'')]
    assert fastcgi.unknown_type(200) == b'\xc8' + bytes(7)
    assert fastcgi.parse_end_request(fastcgi.end_request(3, fastcgi.OVERLOADED)) == \
        (3, fastcgi.OVERLOADED)


def test_to_bytes_is_latin1_both_ways():
    assert to_bytes('caf\xe9') == b'caf\xe9' and to_bytes(b'\xff') == b'\xff'
    assert to_bytes(b'\xe9\xff'.decode('latin-1')) == b'\xe9\xff'     # what flup decoded
    with pytest.raises(ValueError, match='is not latin-1') as info:
        to_bytes('\u20ac')
    assert '\n' not in str(info.value)
    with pytest.raises(TypeError, match='not int'):
        to_bytes(5)


# -- the C codec (common/_fastcgi.c): the same answers as the Python -----------

needs_c = pytest.mark.skipif(fastcgi.C_CODEC is None, reason='the C codec is not built')
DECODERS = [pytest.param(fastcgi.decode_params_py, id='python'),
            pytest.param(getattr(fastcgi.C_CODEC, 'decode_params', None), id='c', marks=needs_c)]
FRAMERS = [pytest.param(fastcgi.frame_stream_py, id='python'),
           pytest.param(getattr(fastcgi.C_CODEC, 'frame_stream', None), id='c', marks=needs_c)]
BAD_PAIRS = [b'\x05', b'\x80\x00\x00', b'\x01\x80\x00', b'\x05\x00abc', b'\x01\x05ab',
             b'\x80\x00\x00\x05\x00ab', encode_pair(b'a', b'b') + b'\x03',
             encode_pair(b'a', b'b') + b'\x81']


@pytest.mark.parametrize('decode', DECODERS)
def test_params_decode_to_latin1_text_and_bad_ones_store_nothing(decode):
    pairs = {b'': b'', b'a': b'1', b'n' * 127: b'v' * 128, b'N' * 128: b'',
             b'\xe9': b'\xff\x00', b'a ': b'dup', b'big': b'z' * 70000}
    into = {'kept': 'x'}
    decode(encode_params(pairs) + encode_pair(b'a', b'last'), into)
    assert into == dict({'kept': 'x', 'a': 'last'}, **{
        k.decode('latin-1'): v.decode('latin-1') for k, v in pairs.items() if k != b'a'})
    # the C codec shares the str of a name or value the last request had at
    # the same place: only when the bytes are the same
    for value in (b'GET', b'PUT', b'\xe9T', b'GET', b'G' * 200, b'H' * 200):
        again = {}
        decode(encode_params({b'REQUEST_METHOD': value, b'\xe9': value}), again)
        assert again == {'REQUEST_METHOD': value.decode('latin-1'),
                         '\xe9': value.decode('latin-1')}
    for content in BAD_PAIRS:
        with pytest.raises(ProtocolError) as info:
            decode(encode_pair(b'first', b'1') + content, into)
        assert 'first' not in into
        with pytest.raises(ProtocolError) as python:
            decode_pairs(encode_pair(b'first', b'1') + content)
        assert str(info.value) == str(python.value)


@pytest.mark.parametrize('frame', FRAMERS)
@pytest.mark.parametrize('size', [0, 1, 7, 8, 65527, 65528, 65529, 200000])
def test_a_stream_frames_as_encode_stream_does(frame, size):
    data = bytes(range(256)) * (size // 256 + 1)
    for end in (False, True):
        assert frame(STDOUT, 65535, memoryview(data)[:size], end) == \
            b''.join(encode_stream(STDOUT, 65535, data[:size], end))


def reference_request(data, limit):
    """What the worker's record-by-record path makes of a request that
    opens ``data``: as parse_request answers, or None when that path would
    not start the app within these bytes."""
    reader = RecordReader()
    reader.feed(data)
    try:
        begin = reader.next_record()
        if begin is None or begin.type != BEGIN_REQUEST:
            return None
        role, flags = fastcgi.parse_begin_request(begin.content)
        params, size = {}, 0
        while True:
            rec = reader.next_record()
            if rec is None or (rec.type, rec.request_id) != (PARAMS, begin.request_id):
                return None
            if not rec.content:
                break
            size += len(rec.content)
            if size > limit:
                return None
            fastcgi.decode_params_py(rec.content, params)
        stdin = []
        while reader.peek() == (STDIN, begin.request_id):
            stdin.append(reader.next_record().content)
    except ProtocolError:
        return None
    return (len(data) - reader.buffered, begin.request_id, role, flags, params, size, stdin)


def request_variants():
    """Requests as nginx sends them, and every way to spoil one."""
    from supervisor_fcgi_ext.lab.fcgiclient import cgi_params, encode_request
    get = encode_request(1, cgi_params('/a?b=c'))
    post = encode_request(9, cgi_params('/p', 'POST', b'x' * 70000), b'x' * 70000,
                          keep_conn=True)
    out = [get, post, get + get, get[:-8] + encode_record(GET_VALUES, 0)]
    out += [get[:cut] for cut in range(0, len(get), 5)]
    out += [post[:cut] for cut in range(0, len(post), 997)]
    begin = encode_record(BEGIN_REQUEST, 1, fastcgi.begin_request())
    out += [begin + encode_record(PARAMS, 1, bad) + encode_record(PARAMS, 1)
            for bad in BAD_PAIRS]
    out += [begin + encode_record(PARAMS, 2, b'') + encode_record(STDIN, 1),   # other ids
            begin + encode_record(BEGIN_REQUEST, 2, fastcgi.begin_request()),
            begin[:8] + b'\x00' * 7 + encode_record(PARAMS, 1),              # short begin
            b'\x02' + get[1:],                                                  # versions
            get[:get.rindex(encode_record(STDIN, 1))] + b'\x02' + encode_record(STDIN, 1)[1:],
            begin + encode_record(PARAMS, 1, b'x' * 65000) * 20]             # oversized
    return out


@needs_c
def test_parse_request_takes_a_whole_request_or_leaves_it_to_the_records():
    taken = 0
    for data in request_variants():
        for limit in (1 << 20, 300):
            got = fastcgi.C_CODEC.parse_request(data, 0, limit)
            assert got in (None, reference_request(data, limit)), data[:80]
            taken += got is not None
            prefixed = fastcgi.C_CODEC.parse_request(b'junk' + data, 4, limit)
            assert prefixed == (None if got is None else (got[0] + 4,) + got[1:])
    assert taken >= 30       # it does take the ordinary ones


@needs_c
def test_parse_request_params_match_a_fresh_decode_whatever_came_before():
    # parse_request copies the last request's dict when the names repeat in
    # the same order (setting the values that changed): a sequence of
    # requests that repeat, reorder, repeat a name, or overflow its pairs
    # must each give what decoding it afresh gives, and a dict handed out
    # and changed must not leak into the next.
    from supervisor_fcgi_ext.lab.fcgiclient import cgi_params, encode_request
    base = cgi_params('/a?b=c')
    many = dict(base, **{'HTTP_X_%d' % i: str(i) for i in range(80)})
    reordered = dict(reversed(list(base.items())))
    sequence = [base, base, dict(base, REMOTE_PORT='4242'), base, reordered, reordered,
                dict(base, QUERY_STRING=''), many, many, dict(many, HTTP_X_7='7!'), base,
                dict(base, HTTP_HOST=None), base]
    for params in sequence:
        params = {k: v.decode('latin-1') if isinstance(v, bytes) else v
                  for k, v in params.items() if v is not None}
        data = encode_request(1, params)
        got = fastcgi.C_CODEC.parse_request(data, 0, 1 << 20)
        assert got is not None
        assert got[4] == params and list(got[4]) == list(params)
        got[4]['SPOILED'] = 'x'
        got[4]['REQUEST_METHOD'] = 'DELETE'
    dup = encode_record(PARAMS, 1, fastcgi.encode_params(params)
                        + fastcgi.encode_pair(b'REQUEST_METHOD', b'PUT'))
    data = encode_record(BEGIN_REQUEST, 1, fastcgi.begin_request()) + dup \
        + encode_record(PARAMS, 1) + encode_record(STDIN, 1)
    for _ in range(2):
        assert fastcgi.C_CODEC.parse_request(data, 0, 1 << 20)[4] == \
            dict(params, REQUEST_METHOD='PUT')
