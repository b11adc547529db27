"""A scrape's per-process lines, kept from one scrape to the next.

A process's line in every family depends only on its entry, its pool's name
and the dialect, and from one scrape to the next most entries are the same
but for request_duration (moving while a request runs).  So each process's
lines but that one are kept, per dialect, with the values they were made of,
and written again when those values are the same: an unchanged process
costs a lookup and a comparison, where its 16 lines cost ~120k instructions
(bench_metrics --instructions).  request_duration is written anew every
scrape.  What is kept is what the last scrape wrote: no more than the
processes that exist, whatever the requests are.
"""

import operator
import struct

from supervisor_fcgi_ext.supervisord.lifecycle import EVENTS

__all__ = ['MOVING', 'EXACT_FIELDS', 'ROW', 'ROW_FAMILIES', 'write']

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
# the numbers as the doubles they are written from (so 0 and -0.0 differ,
# as their text does)
DOUBLES = struct.Struct('=%dd' % len(NUMBER_FIELDS))
_NEG_INF = float('-inf')
_NOTHING = ({}, None, None)


def write(pool, processes, page, memo):
    """The processes' samples into ``page``; ``pool`` their pool's name,
    ``memo`` (what the last scrape in this dialect kept, what this one
    keeps) from `exposition.Kept.swap`."""
    last, known = memo
    last_kept, last_rows, last_columns = last.get(pool, _NOTHING)
    big = page.big_number
    kept_now, rows, durations = {}, [], []
    for p in processes:
        texts, numbers = TEXTS(p), NUMBERS(p)
        try:
            doubles = DOUBLES.pack(*numbers)
        except struct.error:        # no double (never from poolstatus): not kept
            doubles = None
        kept = last_kept.get(texts[0])
        if kept is None or kept[1] != doubles or kept[0] != texts or doubles is None:
            kept = _made(page, pool, texts, doubles, numbers, kept)
        kept_now[texts[0]] = kept
        rows.append(kept[2])
        if kept[3] is not None:
            value = float(p['request_duration'] / 1e6)
            durations.append(f"{kept[3]}{repr(value) if _NEG_INF < value < 1e6 else big(value)}\n")
    columns = last_columns if rows == last_rows else [''.join(c) for c in zip(*rows)]
    known[pool] = kept_now, rows, columns
    lines = page.lines
    for family, column in zip(ROW_FAMILIES, columns):
        lines[family].append(column)
    lines[MOVING].append(''.join(durations))


def _heads(page, pool, texts):
    """Each of ROW's lines up to its value, then MOVING's."""
    escape = page.escape
    labels = (escape(pool), escape(texts[0]))
    extra = dict(zip(TEXT_FIELDS, texts))
    return tuple(page.head(family, labels + ((escape(extra[label]),) if label else ()))
                 for family, _, _, label, _ in ROW) + (page.head(MOVING, labels),)


def _made(page, pool, texts, doubles, numbers, kept):
    """What is kept of a process: (its texts, doubles, line in each of
    ROW_FAMILIES ('' where it has none), MOVING's head or None without one,
    the heads), made from its values and what was kept of its name."""
    heads = kept[4] if kept and kept[0] == texts else _heads(page, pool, texts)
    values = dict(zip(NUMBER_FIELDS, numbers))
    running = bool(values['pid'])
    has = {'all': True, 'running': running,
           'connections': running and values['connections'] >= 0,
           'exact': running and texts[3] == 'ok'}
    lines, number = [], page.number
    for (_, field, divisor, _, which), head in zip(ROW, heads):
        if not has[which]:
            lines.append('')
            continue
        value = 1 if field is None else values[field]
        lines.append(head + number(value if divisor is None else value / divisor) + '\n')
    return texts, doubles, tuple(lines), heads[-1] if has['exact'] else None, heads
