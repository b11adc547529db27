"""The scoreboard through real workers: every request counted per pid, with
either writer, and a worker that serves on when it has no slot."""
from __future__ import annotations

import pytest

from supervisor_fcgi_ext.common.scoreboard import ScoreboardError, Slot
from supervisor_fcgi_ext.supervisord.slots import read_pool
from workerpool import WRITER_OPTIONS, in_background, pid_of, stderr_of, writer_named_in



@pytest.mark.parametrize('options', WRITER_OPTIONS)
def test_scoreboard_counts_every_request_per_pid(pool, options):
    p = pool()
    procs = [p.start(*options) for _ in range(3)]
    served = {}
    calls = [in_background(p.request, '/?sleep=0.05') for _ in range(12)]
    for call in calls + [None] * 18:
        pid = pid_of(call.result() if call else p.request('/'))
        served[pid] = served.get(pid, 0) + 1
    assert sum(served.values()) == 30
    for proc in procs:
        p.settled(proc)
    slots = read_pool(p.board, 'pool', [proc.pid for proc in procs])
    for proc in procs:
        slot = slots[proc.pid]
        assert isinstance(slot, Slot), slot
        assert slot.requests == served.get(proc.pid, 0)
        assert slot.accepted_conn == slot.requests
        assert (slot.state, slot.active, slot.protocol_errors) == ('idle', 0, 0)
        assert slot.bytes_sent > 0 and slot.last_status == 200
        assert writer_named_in(proc, options)


def test_without_the_scoreboard_env_no_slot_is_written(pool):
    p = pool()
    proc = p.start(board=False)
    assert pid_of(p.request('/')) == proc.pid
    with pytest.raises(ScoreboardError, match='no slot'):
        p.slot(proc)


def test_unusable_scoreboard_dir_is_one_line_and_the_worker_serves(pool):
    p = pool()
    p.board = str(p.tmp_path / 'missing')
    proc = p.start()
    assert pid_of(p.request('/')) == proc.pid
    lines = stderr_of(proc).splitlines()
    assert len([line for line in lines if 'scoreboard disabled' in line]) == 1
    assert 'missing' in lines[0] and len(lines) == 2     # and the 'serving' line
