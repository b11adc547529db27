"""fcgi_top's screen as plain data: status dicts from the real PoolMonitor
over real slot files; the live terminal is tested in test_views_top.py."""
import os
import time

import pytest

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.ctl import top
from supervisor_fcgi_ext.ctl.options import UsageError
from supervisor_fcgi_ext.ctl.topscreen import (Reading, clip, count_respawns, render,
                                               text_width)
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView


class Pool:
    """A pool of two workers whose slots the test rewrites between readings."""

    def __init__(self, pool_dir, name='pool'):
        self.dir = pool_dir
        self.name = name
        self.monitor = PoolMonitor(name, os.path.dirname(pool_dir))
        self.pids = {name + '_00': 101, name + '_01': 102}
        self.seq = 0

    def slot(self, pid, requests, state='idle', uri='', memory=0, busy_for=0.0):
        slot = scoreboard.Slot(pid=pid, start_time=time.time() - 60, state=state,
                               requests=requests, accepted_conn=requests,
                               request_method='GET' if uri else '', request_uri=uri,
                               request_start=time.time() - busy_for,
                               last_request_duration_us=1500,
                               last_request_memory=memory)
        self.seq += 2      # as a writer does: every update moves the seqlock
        with open(os.path.join(self.dir, '%d.slot' % pid), 'wb') as f:
            f.write(scoreboard.encode_slot(slot, seq=self.seq))

    def view(self):
        return PoolView(self.name, 'tcp://127.0.0.1:9000', 128, None,
                        [ProcessView(n, pid, 'RUNNING', 1)
                         for n, pid in sorted(self.pids.items())], False)

    def reading(self, when):
        return Reading([self.monitor.status(self.view())], when)


@pytest.fixture
def pool(pool_dir):
    p = Pool(pool_dir)
    p.slot(101, 10, memory=30 * 1048576)
    p.slot(102, 4, state='running', uri='/report?id=7', busy_for=2.5,
           memory=90 * 1048576)
    return p


def rows(lines):
    """{worker name: its row's words} of a screen."""
    return {line.split()[0]: line.split() for line in lines
            if line.startswith('pool_')}


def test_first_screen_says_there_is_no_rate_yet(pool):
    lines = render(pool.reading(10.0), None, 120)
    assert any('(no rate yet: it needs a second reading)' in l for l in lines)
    assert 'requests 14 (-/s)' in '\n'.join(lines)
    assert rows(lines)['pool_00'][:5] == ['pool_00', '101', 'idle', '10', '-']
    assert rows(lines)['pool_01'][-2:] == ['GET', '/report?id=7']


def test_rates_come_from_two_readings(pool):
    first = pool.reading(10.0)
    pool.slot(101, 30)
    second = pool.reading(12.0)
    lines = render(second, first, 120)
    text = '\n'.join(lines)
    assert 'requests 34 (10.0/s)  accepted 34 (10.0/s)' in text
    assert 'no rate yet' not in text
    assert rows(lines)['pool_00'][4] == '10.0'
    assert rows(lines)['pool_01'][4] == '0.0'


def test_a_counter_that_went_down_has_no_rate(pool):
    first = pool.reading(10.0)
    pool.monitor.reset(pool.view())
    assert 'requests 0 (-/s)' in '\n'.join(render(pool.reading(11.0), first, 120))


@pytest.mark.parametrize('key, order', [('r', ['pool_00', 'pool_01']),
                                        ('d', ['pool_01', 'pool_00']),
                                        ('m', ['pool_01', 'pool_00']),
                                        ('n', ['pool_00', 'pool_01'])])
def test_sort_keys(pool, key, order):
    lines = render(pool.reading(1.0), None, 120, sort=key)
    assert [l.split()[0] for l in lines if l.startswith('pool_')] == order


def test_sort_by_rate(pool):
    first = pool.reading(1.0)
    pool.slot(102, 40, state='running', uri='/x', busy_for=0.1)
    lines = render(pool.reading(2.0), first, 120, sort='s')
    assert [l.split()[0] for l in lines if l.startswith('pool_')] == ['pool_01', 'pool_00']


def test_respawns_are_counted_by_pid_change(pool):
    first = pool.reading(1.0)
    pool.pids['pool_01'] = 103
    pool.slot(103, 0)
    second = pool.reading(2.0)
    counts = count_respawns(first, second, {})
    assert counts == {('pool', 'pool_01'): 1}
    lines = render(second, first, 120, respawns=counts)
    header = [l for l in lines if l.startswith('NAME')][0].split()
    assert rows(lines)['pool_01'][header.index('RESP')] == '1'
    assert rows(lines)['pool_01'][4] == '-'       # a new pid has no rate yet


@pytest.mark.parametrize('width', [20, 40, 60, 80, 100])
def test_a_narrow_terminal_drops_columns_never_cuts_a_row_into_garbage(pool, width):
    lines = render(pool.reading(1.0), None, width)
    assert all(text_width(l) <= width for l in lines)
    header = [l for l in lines if l.startswith('NAME')][0].split()
    for row in rows(lines).values():
        assert len(row) >= len(header) - 1     # an empty REQUEST cell is no word
    assert header[0] == 'NAME'
    if width >= 60:
        assert header[:5] == ['NAME', 'PID', 'STATE', 'REQS', 'REQ/S']


def test_worker_text_cannot_move_the_cursor(pool):
    pool.slot(102, 4, state='running', uri='/\x1b[2J\x1b[H\u5b57\u5b57')
    lines = render(pool.reading(1.0), None, 60)
    assert not any('\x1b' in l for l in lines)
    assert all(text_width(l) <= 60 for l in lines)
    assert clip('\u5b57' * 10, 5) == '\u5b57\u5b57'      # wide characters: 2 cells


def test_a_named_pool_that_is_gone_is_said():
    lines = render(Reading([], missing=['old']), None, 80)
    assert 'pool old: not found (removed?)' in lines


def test_parse_args():
    options = top.parse_args('-d 0.5 --batch 3 --sort rate app other')
    assert (options.interval, options.batch, options.sort, options.names) == \
        (0.5, 3, 's', ['app', 'other'])
    assert top.parse_args('--once').batch == 1
    assert top.parse_args('').batch is None


@pytest.mark.parametrize('arg, error', [
    ('-d x', "-d needs seconds from 0.1 to 3600, not 'x'"),
    ('-d nan', "-d needs seconds from 0.1 to 3600, not 'nan'"),
    ('-d 0', "-d needs seconds from 0.1 to 3600, not '0'"),
    ('--batch \u00b2', "--batch needs a whole number from 1 to 100000, not '\u00b2'"),
    ('--batch', '--batch needs a value'),
    ('--sort cpu', "--sort is one of duration, memory, name, rate, requests, not 'cpu'"),
    ('--top', 'unknown option --top'),
    ('"a\x01"', "a pool name cannot contain control characters: 'a\\x01'"),
])
def test_parse_args_refuses_bad_input_with_one_line(arg, error):
    with pytest.raises(UsageError) as info:
        top.parse_args(arg)
    assert str(info.value) == error


def test_plain_batch_prints_each_screen_and_says_a_failed_reading(pool):
    readings = [pool.reading(2.0), OSError('[Errno 111] Connection refused'),
                pool.reading(4.0)]

    def fetch():
        item = readings.pop(0)
        if isinstance(item, Exception):
            raise item
        return item
    out = []
    options = top.parse_args('--batch 4 -d 0.1')
    ok = top.run_plain(fetch, options, pool.reading(1.0), out.append, 'http://x',
                       sleep=lambda s: None)
    assert ok is False
    assert len(out) == 4
    assert 'no rate yet' in out[0] and 'no rate yet' not in out[1]
    assert 'Error: cannot reach supervisord: [Errno 111] Connection refused' in out[2]
    assert 'no rate yet' in out[3]          # after a gap the rates start afresh


def test_screen_keys_and_messages(pool, pool_dir, tmp_path):
    other = Pool(os.path.join(os.path.dirname(pool_dir), 'other'), 'other')
    os.mkdir(other.dir, 0o700)
    both = Reading(pool.reading(1.0).pools + other.reading(1.0).pools, 1.0)
    screen = top.Screen(top.parse_args(''), 'http://x', both)
    text = '\n'.join(screen.lines(100, 30))
    assert 'pool pool ' in text and 'pool other ' in text
    assert screen.key('\t') and screen.shown == 1
    text = '\n'.join(screen.lines(100, 30))
    assert 'pool pool ' in text and 'pool other ' not in text
    screen.key('KEY_LEFT')
    screen.key('KEY_LEFT')
    assert 'pool other ' in '\n'.join(screen.lines(100, 30))
    screen.key('d')
    assert 'sort: duration' in screen.lines(100, 30)[0]
    screen.take('error', 'cannot reach supervisord: refused')
    lines = screen.lines(100, 30)
    assert lines[1] == 'cannot reach supervisord: refused; retrying every 1s'
    assert 'pool other ' in '\n'.join(lines)      # the last figures stay
    screen.take('ok', both)
    assert screen.lines(100, 30)[1].startswith('reconnected at ')
    screen.take('ok', both)
    assert screen.lines(100, 30)[1].startswith('reconnected at ')   # for a while
    screen.message_until = 0
    screen.take('ok', both)
    assert screen.lines(100, 30)[1] == ''
    assert len(screen.lines(100, 30)) == 30 and len(screen.lines(100, 3)) == 3
    assert screen.key('q') is False


def test_screen_scrolls_within_what_there_is(pool):
    screen = top.Screen(top.parse_args(''), 'http://x', pool.reading(1.0))
    whole = screen.lines(100, 40)
    for key in ('KEY_DOWN', 'j', 'KEY_NPAGE'):
        screen.key(key)
    lines = screen.lines(100, 6)          # room for 3 body lines
    assert screen.scroll == len([l for l in whole[2:-1] if l]) + 1 - 3
    assert lines[0].startswith('fcgi_top') and lines[-1].startswith('q quit')
    screen.key('KEY_PPAGE')
    assert screen.scroll == 0 and screen.lines(100, 6)[2].startswith('pool pool')
