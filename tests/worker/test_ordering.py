"""Which writer a worker uses on which CPU: the Python writer only where
stores keep their order (x86), the C writer everywhere it is built, else
no scoreboard and one line."""
from __future__ import annotations

import os

import pytest

from supervisor_fcgi_ext.common.scoreboard import ENV_VAR
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
from supervisor_fcgi_ext.worker import ordering, slotwriter
from supervisor_fcgi_ext.worker.slotwriter import SlotWriter

PID = 4242


@pytest.mark.parametrize('machine, use_c, c_built, kind, note', [
    ('x86_64', True, True, 'C', None),
    ('x86_64', False, True, 'Python', None),
    ('x86_64', True, False, 'Python', None),
    ('AMD64', True, False, 'Python', None),
    ('i686', False, False, 'Python', None),
    ('aarch64', True, True, 'C', None),
    ('aarch64', False, True, 'C', 'the Python writer is x86 only (aarch64 does not keep '
                                  'stores in order): the C writer writes it'),
    ('aarch64', True, False, None, 'scoreboard disabled: the C writer is not built and the '
                                   'Python writer is x86 only (aarch64 does not keep stores '
                                   'in order)'),
    ('armv7l', False, False, None, 'scoreboard disabled'),
    ('ppc64le', True, False, None, 'scoreboard disabled'),
    ('riscv64', True, False, None, 'scoreboard disabled'),
])
def test_choose_writer_uses_python_stores_only_where_they_keep_their_order(
        machine, use_c, c_built, kind, note):
    assert ordering.stores_ordered(machine) == (kind == 'Python' or machine == 'x86_64')
    got_kind, got_note = ordering.choose_writer(use_c, c_built, machine)
    assert got_kind == kind
    assert got_note == note if note is None else got_note.startswith(note)


def test_without_ordered_stores_or_c_there_is_no_scoreboard_and_one_line(
        tmp_path, capsys, monkeypatch):
    base = str(tmp_path)
    ensure_pool_dir(base, 'web')
    env = {ENV_VAR: base, 'SUPERVISOR_GROUP_NAME': 'web'}
    monkeypatch.setattr(ordering.platform, 'machine', lambda: 'aarch64')
    monkeypatch.setattr(slotwriter, 'CSlotWriter', None)
    assert SlotWriter.from_environ(env, pid=PID, threads=4) is None
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'scoreboard disabled' in err and 'aarch64' in err
    assert not [name for name in os.listdir(os.path.join(base, 'web')) if '.slot' in name]


@pytest.mark.skipif(slotwriter.CSlotWriter is None, reason='the C writer is not built here')
def test_python_writer_asked_for_without_ordered_stores_is_the_c_one_and_one_line(
        tmp_path, capsys, monkeypatch):
    base = str(tmp_path)
    ensure_pool_dir(base, 'web')
    monkeypatch.setattr(ordering.platform, 'machine', lambda: 'aarch64')
    env = {ENV_VAR: base, 'SUPERVISOR_GROUP_NAME': 'web'}
    assert type(SlotWriter.from_environ(env, pid=PID, use_c=False)) is slotwriter.CSlotWriter
    assert type(SlotWriter.from_environ(env, pid=PID + 1, threads=2, use_c=False)) is \
        slotwriter._LockedCSlotWriter
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all('x86 only' in line and 'C writer writes it' in line
                                 for line in err)
