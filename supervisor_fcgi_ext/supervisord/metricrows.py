"""A scrape's per-process lines, kept from one scrape to the next.

A process's line in every family depends only on its entry, its pool's name
and the dialect, and from one scrape to the next most entries are the same
but for request_duration (moving while a request runs).  So each process's
lines but that one are kept, per dialect, with the values they were made of
(numbers as doubles, whose bits differ where their text does), and written
again while those values are the same; a process whose numbers moved gets
only those lines made again.  request_duration's lines are made again when
any duration moved.  At 256 exact workers (bench_metrics --instructions) a
scrape's writing costs ~13k instructions a worker when nothing moved, ~19k
when the durations did, ~43k when every worker also served a request; it
was ~120k each time.  What is kept is what the last scrape wrote: no more
than the processes that exist, whatever the requests are.
"""

import collections
import itertools
import operator
import struct

from supervisor_fcgi_ext.supervisord.lifecycle import EVENTS

__all__ = ['MOVING', 'EXACT_FIELDS', 'ROW', 'ROW_FAMILIES', 'TEXT_FIELDS', 'NUMBER_FIELDS',
           'Pool', 'write']

# what only a readable scoreboard slot gives: (family, field, divisor); the
# first moves while a request runs, so it is written anew every scrape
EXACT_FIELDS = (
    ('fcgi_process_request_duration_seconds', 'request_duration', 1e6),
    ('fcgi_process_last_request_duration_seconds', 'last_request_duration', 1e6),
    ('fcgi_process_last_request_cpu', 'last_request_cpu', 1),
    ('fcgi_process_last_request_memory_bytes', 'last_request_memory', 1),
    ('fcgi_process_exceptions', 'exceptions', 1),
)
MOVING = EXACT_FIELDS[0][0]
# A process's families but MOVING, in FAMILIES' order: (family, the entry's
# number: None for the constant 1; its divisor; the entry's text that labels
# it; which processes have it: all, running (a pid), connections (running,
# with a count: 0 or more), exact (running, with a readable slot)).
ROW = (
    ('fcgi_process_state', None, None, 'worker_state', 'all'),
    ('fcgi_process_pid', 'pid', None, None, 'all'),
    ('fcgi_process_requests', 'requests', None, 'requests_source', 'running'),
    ('fcgi_process_accepted_connections', 'accepted_conn', None, 'requests_source',
     'running'),
    ('fcgi_process_start_time_seconds', 'start', None, None, 'running'),
    ('fcgi_process_connections', 'connections', None, None, 'connections'),
    ('fcgi_process_scoreboard_slot', None, None, 'slot_status', 'running'),
) + tuple((family, field, divisor, None, 'exact')
          for family, field, divisor in EXACT_FIELDS[1:]) + tuple(
    ('fcgi_process_' + event, event, None, None, 'all') for event in EVENTS)
ROW_FAMILIES = tuple(family for family, *_ in ROW)

TEXT_FIELDS = ('name', 'worker_state', 'requests_source', 'slot_status')
NUMBER_FIELDS = tuple(field for _, field, *_ in ROW if field)
TEXTS = operator.itemgetter(*TEXT_FIELDS)
NUMBERS = operator.itemgetter(*NUMBER_FIELDS)
DURATION = operator.itemgetter(EXACT_FIELDS[0][1])
# a process's numbers as the doubles they are written from (so 0 and -0.0
# differ, as their text does)
WIDTH = struct.calcsize('=%dd' % len(NUMBER_FIELDS))
# a process's doubles as their bits, which differ where their text does
BITS = struct.Struct('=%dQ' % len(NUMBER_FIELDS))
# ROW's rows that have a number, in NUMBER_FIELDS' order; each row's number
NUMBERED = tuple(i for i, (_, field, *_) in enumerate(ROW) if field)
NUMBER_OF = {i: j for j, i in enumerate(NUMBERED)}
PID, CONNECTIONS = NUMBER_FIELDS.index('pid'), NUMBER_FIELDS.index('connections')


# what is kept of one process: its texts and doubles, its line in each of
# ROW_FAMILIES ('' where it has none), MOVING's head (None: it has no such
# line), every line's head, and which families it has (running, connections,
# exact)
ProcessLines = collections.namedtuple('ProcessLines', 'texts doubles lines moving_head heads shape')


class Pool:
    """What a scrape keeps of a pool's processes, each input beside what
    was made of it: the processes' texts and numbers (as doubles) and what
    each process's lines were (by name), the columns they make; the
    request_durations (as doubles) and their lines."""

    __slots__ = ('texts', 'doubles', 'by_name', 'columns', 'heads', 'moving', 'durations')


def write(pool, processes, page, memo):
    """The processes' samples into ``page``; ``pool`` their pool's name,
    ``memo`` (what the last scrape in this dialect kept, what this one
    keeps) from `exposition.Kept.swap`.  Unchanged but for request_duration
    (the commonest scrape), a pool's rows cost a few C calls a process."""
    last, known = memo
    before = last.get(pool)
    texts = list(map(TEXTS, processes))
    numbers = list(map(NUMBERS, processes))
    doubles = _doubles(itertools.chain.from_iterable(numbers),
                       len(numbers) * len(NUMBER_FIELDS))
    durations = list(map(DURATION, processes))
    moving = _doubles(durations, len(durations))
    if (before is not None and doubles is not None and doubles == before.doubles
            and texts == before.texts):
        now = before
    else:
        now = _rows(page, pool, texts, numbers, doubles, before)
    if moving is None or moving != now.moving:
        number = page.number
        now.durations = ''.join([f'{head}{number(duration / 1e6)}\n' for head, duration
                                 in zip(now.heads, durations) if head is not None])
        now.moving = moving
    known[pool] = now
    lines = page.lines
    for family, column in zip(ROW_FAMILIES, now.columns):
        lines[family].append(column)
    lines[MOVING].append(now.durations)


def _doubles(numbers, count):
    """The numbers as doubles (bytes), or None for one no double holds (a
    text, a huge int: never from poolstatus) and so never found again."""
    try:
        return struct.pack('=%dd' % count, *numbers)
    except struct.error:
        return None


def _rows(page, pool, texts, numbers, doubles, before):
    """A new Pool of the processes' rows: a process's as before when its
    texts and numbers are."""
    by_name = before.by_name if before is not None else {}
    now = Pool()
    now.texts, now.doubles, now.by_name, now.moving = texts, doubles, {}, None
    rows, heads = [], []
    for i, (text, number) in enumerate(zip(texts, numbers)):
        mine = doubles[i * WIDTH:(i + 1) * WIDTH] if doubles else _doubles(number, len(number))
        kept = by_name.get(text[0])
        if kept is None or kept.doubles != mine or kept.texts != text or mine is None:
            kept = _made(page, pool, text, mine, number, kept)
        now.by_name[text[0]] = kept
        rows.append(kept.lines)
        heads.append(kept.moving_head)
    now.columns = [''.join(column) for column in zip(*rows)]
    now.heads = heads
    return now


def _heads(page, pool, texts):
    """Each of ROW's lines up to its value, then MOVING's."""
    escape = page.escape
    labels = (escape(pool), escape(texts[0]))
    extra = dict(zip(TEXT_FIELDS, texts))
    return tuple(page.head(family, labels + ((escape(extra[label]),) if label else ()))
                 for family, _, _, label, _ in ROW) + (page.head(MOVING, labels),)


def _made(page, pool, texts, doubles, numbers, kept):
    """The ProcessLines of a process, made from its values and what was kept of its
    name: only the lines whose number moved (as a double's bits) made again
    while its labels and families are the same."""
    running = bool(numbers[PID])
    shape = running, running and numbers[CONNECTIONS] >= 0, running and texts[3] == 'ok'
    same = kept is not None and kept.texts == texts
    heads = kept.heads if same else _heads(page, pool, texts)
    if same and doubles is not None and kept.doubles is not None and kept.shape == shape:
        lines = list(kept.lines)
        for i in itertools.compress(NUMBERED, map(operator.ne, BITS.unpack(kept.doubles),
                                                  BITS.unpack(doubles))):
            if lines[i]:
                lines[i] = _line(page, heads[i], ROW[i], numbers[NUMBER_OF[i]])
        return ProcessLines(texts, doubles, tuple(lines), kept.moving_head, heads, shape)
    has = dict(zip(('running', 'connections', 'exact'), shape), all=True)
    lines = tuple(_line(page, head, row, 1 if row[1] is None else numbers[NUMBER_OF[i]])
                  if has[row[4]] else '' for i, (row, head) in enumerate(zip(ROW, heads)))
    return ProcessLines(texts, doubles, lines, heads[-1] if shape[2] else None, heads, shape)


def _line(page, head, row, value):
    divisor = row[2]
    return head + page.number(value if divisor is None else value / divisor) + '\n'
