"""Processes and sockets read from /proc (lab/processes.py), against real
processes, a real zombie and real listening sockets."""
import os
import signal
import socket
import subprocess
import sys

from supervisor_fcgi_ext.lab import processes


def test_session_processes_are_a_new_sessions_live_members():
    leader = subprocess.Popen(['sh', '-c', 'sleep 100 & exec sleep 100'],
                              start_new_session=True)
    try:
        members = []
        for _ in range(100):   # until sh has started its background sleep
            members = processes.session_processes(leader.pid)
            if len(members) == 2:
                break
            processes.wait_gone([leader.pid], 0.02)
        assert leader.pid in members and len(members) == 2
        assert processes.cmdline(leader.pid) == ['sleep', '100']
        assert processes.session_processes(os.getsid(0)) != members
        assert processes.kill_session(leader.pid) == []
        assert processes.session_processes(leader.pid) == []
    finally:
        leader.kill()
        leader.wait()


def test_a_zombie_is_not_alive_and_not_in_its_session():
    child = subprocess.Popen([sys.executable, '-c', 'pass'], start_new_session=True)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped
    try:
        assert os.path.exists('/proc/%d' % child.pid)
        assert not processes.alive(child.pid)
        assert processes.session_processes(child.pid) == []
    finally:
        child.wait()
    assert not processes.alive(child.pid) and processes.cmdline(child.pid) == []
    assert processes.cwd(child.pid) == ''


def test_alive_cmdline_cwd_of_this_process():
    me = os.getpid()
    assert processes.alive(me) and me in processes.all_pids()
    assert os.path.basename(processes.cmdline(me)[0]).startswith('python')
    assert processes.cwd(me) == os.getcwd()


def test_listening_ports_are_the_listening_sockets_held():
    v4, v6, connected = socket.socket(), socket.socket(socket.AF_INET6), socket.socket()
    try:
        v4.bind(('127.0.0.1', 0))
        v4.listen(1)
        v6.bind(('::1', 0))
        v6.listen(1)
        connected.connect(v4.getsockname())   # a connection, not a listener
        port4, port6 = v4.getsockname()[1], v6.getsockname()[1]
        ports = processes.listening_ports(os.getpid())
        assert {port4, port6} <= ports
        assert connected.getsockname()[1] not in ports
        v4.close()
        ports = processes.listening_ports(os.getpid())
        assert port6 in ports and port4 not in ports
    finally:
        for sock in (v4, v6, connected):
            sock.close()


def test_kill_session_ends_a_stopped_process():
    leader = subprocess.Popen(['sleep', '100'], start_new_session=True)
    try:
        os.kill(leader.pid, signal.SIGSTOP)   # SIGKILL ends even a stopped one
        assert processes.kill_session(leader.pid, timeout=5) == []
    finally:
        leader.kill()
        leader.wait()
