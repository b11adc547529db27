"""stops.StopWatch on real processes: SIGSTOP, a stop of its own, a
debugger's ptrace stop, SIGCONT and exits are seen at every look, and a
process that has not run since it was found running is not read again."""
import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from supervisor_fcgi_ext.supervisord import readings
from supervisor_fcgi_ext.supervisord.stops import StopWatch, cpu_clock

# a child that sleeps in a read of its stdin, and on a line runs: answers it,
# or stops itself with the signal the line names
CHILD = r'''
import os, signal, sys
print('ready', flush=True)
for line in sys.stdin:
    if line.strip():
        os.kill(os.getpid(), getattr(signal, line.strip()))
    print('ran', flush=True)
'''
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


@pytest.fixture
def child():
    made = []

    def make():
        # its own process group in our session, as supervisord's children
        # (setpgrp): a stop signal of its own is not discarded, as it would
        # be in an orphaned group (a test run in the background)
        proc = subprocess.Popen([sys.executable, '-c', CHILD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, process_group=0)
        made.append(proc)
        assert proc.stdout.readline() == 'ready\n'
        return proc
    yield make
    for proc in made:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def state(pid):
    with open('/proc/%d/stat' % pid, 'rb') as f:
        return f.read().rpartition(b')')[2].split()[0]


def wait_state(pid, states, timeout=10):
    deadline = time.monotonic() + timeout
    while state(pid) not in states:
        assert time.monotonic() < deadline, 'pid %d still %r' % (pid, state(pid))
        os.sched_yield()


def run(proc, line=''):
    """Make the child run once (and, with a signal's name, stop itself)."""
    proc.stdin.write(line + '\n')
    proc.stdin.flush()
    if not line:
        assert proc.stdout.readline() == 'ran\n'
        wait_state(proc.pid, (b'S',))


class Counted:
    """readings.frozen_pids, counting the pids it reads."""

    def __init__(self):
        self.read = []

    def __call__(self, pids):
        self.read += pids
        return readings.frozen_pids(pids)


def test_a_process_that_has_not_run_is_not_read_again(child):
    proc = child()
    read = Counted()
    watch = StopWatch(read)
    assert watch.frozen([proc.pid]) == frozenset() and read.read == [proc.pid]
    assert watch.frozen([proc.pid]) == frozenset() and read.read == [proc.pid]
    run(proc)
    assert watch.frozen([proc.pid]) == frozenset() and read.read == [proc.pid] * 2


def test_sigstop_and_sigcont_are_seen_at_once(child):
    proc = child()
    watch = StopWatch()
    assert watch.frozen([proc.pid]) == frozenset()
    os.kill(proc.pid, signal.SIGSTOP)
    wait_state(proc.pid, (b'T',))
    assert watch.frozen([proc.pid]) == {proc.pid}
    assert watch.frozen([proc.pid]) == {proc.pid}
    os.kill(proc.pid, signal.SIGCONT)     # it is woken from outside, before it runs
    wait_state(proc.pid, (b'S', b'R'))
    assert watch.frozen([proc.pid]) == frozenset()


def test_a_stop_of_its_own_between_two_looks_is_seen(child):
    proc = child()
    watch = StopWatch()
    assert watch.frozen([proc.pid]) == frozenset()
    run(proc, 'SIGTSTP')
    wait_state(proc.pid, (b'T',))
    assert watch.frozen([proc.pid]) == {proc.pid}


def test_a_debuggers_stop_is_seen(child):
    proc = child()
    watch = StopWatch()
    assert watch.frozen([proc.pid]) == frozenset()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(PTRACE_ATTACH, proc.pid, None, None) != 0:
        pytest.skip('ptrace: %s' % os.strerror(ctypes.get_errno()))
    try:
        wait_state(proc.pid, (b't',))
        assert watch.frozen([proc.pid]) == {proc.pid}
    finally:
        assert libc.ptrace(PTRACE_DETACH, proc.pid, None, None) == 0
    wait_state(proc.pid, (b'S', b'R'))
    assert watch.frozen([proc.pid]) == frozenset()


def test_a_pid_gone_is_not_frozen_and_its_clock_is_forgotten(child):
    proc = child()
    read = Counted()
    watch = StopWatch(read)
    watch.frozen([proc.pid])
    watch.forget(proc.pid)
    assert watch.frozen([proc.pid]) == frozenset() and read.read == [proc.pid] * 2
    proc.kill()
    proc.wait()
    assert watch.frozen([proc.pid]) == frozenset() and read.read == [proc.pid] * 3


def test_the_clock_is_read_before_the_state(child):
    """A process that runs into a stop between the two reads moves the clock
    kept, so the next look reads it again."""
    calls = []
    watch = StopWatch(read=lambda pids: calls.append('state') or frozenset(),
                      clock=lambda pid: calls.append('clock') or 7)
    watch.frozen([1])
    assert calls == ['clock', 'state']


def test_a_running_processes_clock_moves_and_a_reaped_one_has_none(child):
    proc = child()
    first = time.clock_gettime_ns(cpu_clock(proc.pid))
    run(proc)
    assert time.clock_gettime_ns(cpu_clock(proc.pid)) > first
    proc.kill()
    proc.wait()
    with pytest.raises(OSError):
        time.clock_gettime_ns(cpu_clock(proc.pid))
