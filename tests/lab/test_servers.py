"""What the lab's servers share (lab/servers.py): waiting, workdirs, tails,
sessions stopped."""
import os
import subprocess

import pytest

from supervisor_fcgi_ext.lab.servers import (HarnessError, make_workdir,
                                             others_can_reach, stop_session, tail,
                                             wait_for)


def test_wait_for_returns_the_value_or_names_what_timed_out():
    assert wait_for(lambda: 42, 1, 'x') == 42
    with pytest.raises(HarnessError, match=r'^timed out after 0.1s waiting for godot$'):
        wait_for(lambda: False, 0.1, 'godot')


def test_stop_session_kills_a_whole_session():
    leader = subprocess.Popen(['sh', '-c', 'sleep 100 & sleep 100'],
                              start_new_session=True)
    try:
        stop_session(leader.pid)
        assert leader.wait(5) == -9
    finally:
        leader.kill()
        leader.wait()


def test_workdir_made_is_reachable_by_others_and_a_given_one_is_kept(tmp_path):
    path, created = make_workdir(None, 'sfe-test-')
    try:
        assert created and others_can_reach(path)
        assert os.stat(path).st_mode & 0o777 == 0o755
    finally:
        os.rmdir(path)
    given = str(tmp_path / 'a' / 'b')
    assert make_workdir(given, 'x') == (given, False) and os.path.isdir(given)
    os.chmod(tmp_path, 0o700)
    assert not others_can_reach(given)


def test_tail_is_the_last_lines_or_nothing(tmp_path):
    log = tmp_path / 'x.log'
    log.write_bytes(b''.join(b'line %d\n' % i for i in range(100)) + b'\xff end')
    assert tail(str(log), 2) == 'line 99\n\ufffd end'
    assert tail(str(tmp_path / 'missing')) == ''
