"""The slot cache on real files: a kept fd answers what changed and only
that; a file replaced, removed, cut short or an fd number reused behind its
back is noticed; fds are bounded and closed when their worker goes."""
import os
import time

import pytest

from supervisor_fcgi_ext.common.scoreboard import (
    NoSlot, ScoreboardError, Slot, decode_slot, encode_slot, slot_path)
from supervisor_fcgi_ext.supervisord import slotcache
from supervisor_fcgi_ext.supervisord.slotcache import SlotCache, held_fds
from slotfactory import PID, make_slot
from pluginstate import forget_plugins

OTHER = PID + 1


def put(base, slot, seq=2, pool='pool'):
    """A slot file as a worker makes it: written whole, renamed into place."""
    path = slot_path(base, pool, slot.pid)
    with open(path + '.tmp', 'wb') as f:
        f.write(encode_slot(slot, seq))
    os.rename(path + '.tmp', path)
    return path


def poke(path, slot, seq):
    """An update in place, as the writer does it (same inode)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, encode_slot(slot, seq), 0)
    finally:
        os.close(fd)


def fds_on(path):
    """How many of this process's fds are open on ``path``."""
    found = 0
    for name in os.listdir('/proc/self/fd'):
        try:
            found += os.readlink('/proc/self/fd/' + name) == path
        except OSError:
            pass
    return found


@pytest.fixture
def cache(pool_dir):
    base = os.path.dirname(pool_dir)
    made = SlotCache(base, 'pool')
    yield made
    made.close()


def base_of(cache):
    return cache.base


def test_a_kept_fd_answers_until_the_seq_word_moves(cache):
    path = put(base_of(cache), make_slot(requests=5))
    assert cache.read([PID])[PID].requests == 5 and cache.changed
    assert fds_on(path) == 1
    assert cache.read([PID])[PID].requests == 5 and not cache.changed
    poke(path, make_slot(requests=6), seq=4)
    assert cache.read([PID])[PID].requests == 6 and cache.changed
    assert fds_on(path) == 1


def test_a_torn_record_is_never_returned(cache):
    path = put(base_of(cache), make_slot(requests=5))
    cache.read([PID])
    poke(path, make_slot(requests=6), seq=5)      # odd: a writer is inside
    got = cache.read([PID])[PID]
    assert isinstance(got, ScoreboardError) and 'being written' in str(got)
    poke(path, make_slot(requests=7), seq=6)
    assert cache.read([PID])[PID].requests == 7


def test_a_replaced_file_with_the_same_seq_is_read_afresh(cache):
    path = put(base_of(cache), make_slot(requests=5), seq=2)
    cache.read([PID])
    put(base_of(cache), make_slot(requests=1), seq=2)   # a new worker, same pid
    assert cache.read([PID])[PID].requests == 1
    assert fds_on(path) == 1


def test_a_removed_or_truncated_file_says_so(cache):
    path = put(base_of(cache), make_slot())
    cache.read([PID])
    os.truncate(path, 100)
    got = cache.read([PID])[PID]
    assert isinstance(got, ScoreboardError) and 'truncated' in str(got)
    put(base_of(cache), make_slot())
    cache.read([PID])
    os.unlink(path)
    assert isinstance(cache.read([PID])[PID], NoSlot)
    assert fds_on(path + ' (deleted)') == 0


def test_fds_close_when_a_pid_is_not_asked_forgotten_or_closed(cache):
    paths = [put(base_of(cache), make_slot(pid=pid)) for pid in (PID, OTHER)]
    held = held_fds()
    cache.read([PID, OTHER])
    assert [fds_on(p) for p in paths] == [1, 1] and held_fds() == held + 2
    cache.read([OTHER])                      # PID exited
    assert [fds_on(p) for p in paths] == [0, 1]
    cache.forget(OTHER)
    assert fds_on(paths[1]) == 0
    cache.read([PID, OTHER])
    cache.close()
    assert [fds_on(p) for p in paths] == [0, 0] and held_fds() == held


def test_a_number_reused_after_cleanup_fds_is_neither_read_nor_closed(cache, tmp_path):
    path = put(base_of(cache), make_slot(requests=5))
    cache.read([PID])
    fd = cache._entries[PID].fd
    os.close(fd)                             # supervisord's cleanup_fds
    other = tmp_path / 'other'
    other.write_bytes(encode_slot(make_slot(requests=99), 2))
    reused = os.open(str(other), os.O_RDONLY)
    try:
        assert reused == fd
        assert cache.read([PID])[PID].requests == 5
        os.fstat(reused)                     # still open: not ours to close
        assert fds_on(path) == 1
    finally:
        os.close(reused)


def test_past_the_fd_budget_slots_are_read_without_keeping_fds(cache, monkeypatch):
    path = put(base_of(cache), make_slot(requests=5))
    monkeypatch.setattr(slotcache, 'fd_budget', lambda: held_fds())
    assert cache.read([PID])[PID].requests == 5
    assert fds_on(path) == 0
    poke(path, make_slot(requests=6), seq=4)
    assert cache.read([PID])[PID].requests == 6


def test_a_busy_slots_duration_runs_on_from_the_kept_record(cache):
    start = time.time() - 2
    path = put(base_of(cache), make_slot(state='running', request_start=start))
    with open(path, 'rb') as f:
        record = f.read()
    first = cache.read([PID], now=start + 1)[PID]
    for later in (3, 3.0000004, 3.0000006, 1e-6, 0):  # the clock may step back too
        again = cache.read([PID], now=start + later)[PID]
        assert not cache.changed
        assert again == decode_slot(record, start + later, PID)
    assert (first.request_duration_us, again.request_duration_us) == (1000000, 0)


def test_a_slot_made_after_an_absent_look_is_found(cache):
    """The pool directory's ctime spares the opens of absent slots only
    once it is older than DIR_SETTLE: a slot made in the same clock tick
    as a look is still found by the next one."""
    base = base_of(cache)
    for clock in (time.time, lambda: time.time() + 10 * slotcache.DIR_SETTLE):
        cache.clock = clock
        assert isinstance(cache.read([PID])[PID], NoSlot)
        assert isinstance(cache.read([PID])[PID], NoSlot) and not cache.changed
        put(base, make_slot())
        got = cache.read([PID])[PID]
        assert isinstance(got, Slot) and cache.changed
        os.unlink(slot_path(base, 'pool', PID))
        cache.close()


def test_a_missing_pool_directory_is_no_slot_every_time(tmp_path):
    cache = SlotCache(str(tmp_path), 'gone')
    assert isinstance(cache.read([PID])[PID], NoSlot)
    assert isinstance(cache.read([PID])[PID], NoSlot)


def test_the_plugin_closes_kept_fds_before_a_reload_and_with_a_pool(tmp_path):
    """supervisord stopping or reloading (its cleanup_fds follows), a pool
    removed or replaced: no slot fd stays open."""
    from supervisor import events
    from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
    from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
    from test_rpcinterface import make_supervisord
    events.clear()
    try:
        supervisord = make_supervisord()
        p = make_fcgi_rpcinterface(supervisord, scoreboard_dir=str(tmp_path),
                                   sample_interval='60').plugin
        group = supervisord.process_groups['app']
        group.processes['app_00'].pid = PID
        ensure_pool_dir(str(tmp_path), 'app')
        path = put(str(tmp_path), make_slot(), pool='app')
        p.sample_all()
        assert fds_on(path) == 1
        events.notify(events.SupervisorStoppingEvent())
        assert fds_on(path) == 0
        p.sample_all()
        assert fds_on(path) == 1
        supervisord.process_groups['app'] = type(group)(group.config)   # `update`
        supervisord.process_groups['app'].socket_manager = group.socket_manager
        supervisord.process_groups['app'].processes = group.processes
        p.monitor(supervisord.process_groups['app'])
        assert fds_on(path) == 0
        p.sample_all()
        assert fds_on(path) == 1
        del supervisord.process_groups['app']
        p.sample_all()
        assert fds_on(path) == fds_on(path + ' (deleted)') == 0
    finally:
        forget_plugins()


def test_a_header_spoiled_in_place_is_noticed_at_once(tmp_path):
    """Someone else's bytes over the magic, the seq left as it was: the next
    look reads the record again and says the slot is unreadable."""
    from supervisor_fcgi_ext.common import scoreboard
    from supervisor_fcgi_ext.supervisord.slotcache import SlotCache
    from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
    from supervisor_fcgi_ext.worker.slotwriter import SlotWriter
    directory = ensure_pool_dir(str(tmp_path), 'pool')
    writer = SlotWriter(directory, pid=4242)
    cache = SlotCache(str(tmp_path), 'pool')
    try:
        assert isinstance(cache.read([4242])[4242], scoreboard.Slot)
        with open(writer.path, 'r+b') as f:
            f.write(b'garbage!')
        assert isinstance(cache.read([4242])[4242], scoreboard.ScoreboardError)
    finally:
        cache.close()
        writer.close()


@pytest.fixture
def settled(pool_dir):
    """A cache whose pool directory is older than DIR_SETTLE at every look,
    so a look while it is unchanged trusts it (one pread a kept slot)."""
    made = SlotCache(os.path.dirname(pool_dir), 'pool',
                     clock=lambda: time.time() + 10 * slotcache.DIR_SETTLE)
    yield made
    made.close()


def trusted_look(cache, path):
    """Read twice: the first look notes the directory, the second trusts it."""
    cache.read([PID])
    return cache.read([PID])[PID]


def dir_change_later():
    time.sleep(0.05)    # past the tick of the last ctime: the change moves it


def test_a_trusted_look_is_one_pread_and_gives_the_same_record_bytes(settled, monkeypatch):
    path = put(settled.base, make_slot(requests=5))
    first = trusted_look(settled, path)
    record = settled.records[PID]
    calls = []
    monkeypatch.setattr(os, 'fstat', lambda fd, real=os.fstat: calls.append(fd) or real(fd))
    again = settled.read([PID])[PID]
    assert again is first and settled.records[PID] is record and calls == []
    poke(path, make_slot(requests=6), seq=4)
    assert settled.read([PID])[PID].requests == 6 and settled.records[PID] != record


def test_a_trusted_look_notices_a_file_cut_short_or_cut_and_grown_again(settled):
    path = put(settled.base, make_slot(requests=5))
    trusted_look(settled, path)
    os.truncate(path, 500)           # the 24-byte header and seq still there
    got = settled.read([PID])[PID]
    assert isinstance(got, ScoreboardError) and 'truncated' in str(got)
    dir_change_later()
    path = put(settled.base, make_slot(requests=5))
    trusted_look(settled, path)
    os.truncate(path, 0)
    os.truncate(path, 1024)
    got = settled.read([PID])[PID]
    assert isinstance(got, ScoreboardError) and 'bad magic' in str(got)


def test_a_trusted_look_neither_reads_nor_closes_a_number_reused(settled, tmp_path):
    path = put(settled.base, make_slot(requests=5))
    trusted_look(settled, path)
    for kind in ('file', 'pipe'):
        fd = settled._entries[PID].fd
        if kind == 'file':
            other = tmp_path / 'other'
            other.write_bytes(encode_slot(make_slot(requests=99), 2))
            made = [os.open(str(other), os.O_RDONLY)]
        else:
            made = list(os.pipe())
        os.dup2(made[0], fd)         # supervisord's cleanup_fds, then an open
        try:
            assert settled.read([PID])[PID].requests == 5
            os.fstat(fd)             # still open: not ours to close
            assert fds_on(path) == 1
        finally:
            for each in made + [fd]:
                os.close(each)


def test_a_slot_linked_elsewhere_then_removed_or_its_directory_replaced(settled, tmp_path):
    path = put(settled.base, make_slot(requests=5))
    trusted_look(settled, path)
    dir_change_later()
    os.link(path, str(tmp_path / 'kept'))      # the inode lives on elsewhere
    os.unlink(path)
    assert isinstance(settled.read([PID])[PID], NoSlot)
    dir_change_later()
    path = put(settled.base, make_slot(requests=5))
    trusted_look(settled, path)
    pool = os.path.dirname(path)
    dir_change_later()
    os.rename(pool, pool + '.old')
    os.mkdir(pool)
    put(settled.base, make_slot(requests=7))
    assert settled.read([PID])[PID].requests == 7
