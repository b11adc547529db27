"""Processes and their sockets read from /proc (Linux), for the lab.

The lab finds what a server left behind by session, and whether nginx's
master holds its listening socket. /proc answers both, so installing the
package brings no process library onto supervisord hosts.
"""
from __future__ import annotations

import os
import signal
import time

__all__ = ['alive', 'all_pids', 'cmdline', 'cwd', 'kill_session',
           'listening_ports', 'session_processes', 'wait_gone']


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp,
    session, ... (the name may hold spaces and parentheses)."""
    with open('/proc/%d/stat' % pid, 'rb') as f:
        data = f.read()
    return data[data.rindex(b')') + 2:].split()


def alive(pid):
    """Whether ``pid`` runs: not gone, not a zombie (orphans' zombies wait
    for an init that may never reap them in containers)."""
    try:
        return _stat_fields(pid)[0] not in (b'Z', b'X')
    except (OSError, ValueError, IndexError):
        return False


def cmdline(pid):
    """argv of ``pid`` as a list ([] when it is gone or a zombie)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        return []
    return [arg.decode('utf-8', 'replace') for arg in data.split(b'\0')[:-1]]


def cwd(pid):
    """The working directory of ``pid`` ('' when it is gone)."""
    try:
        return os.readlink('/proc/%d/cwd' % pid)
    except OSError:
        return ''


def all_pids():
    """Pids of every process there is now, sorted."""
    return sorted(int(name) for name in os.listdir('/proc') if name.isdigit())


def session_processes(sid):
    """Pids of the live processes of session ``sid`` (a server and all it
    spawned), sorted."""
    found = []
    for pid in all_pids():
        try:
            fields = _stat_fields(pid)
        except (OSError, ValueError):
            continue   # exited meanwhile
        if int(fields[3]) == sid and fields[0] not in (b'Z', b'X'):
            found.append(pid)
    return found


def wait_gone(pids, timeout):
    """Wait until none of ``pids`` is alive; the ones still alive after
    ``timeout`` seconds ([] when all are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def kill_session(sid, timeout=5.0):
    """SIGKILL every process of session ``sid`` and wait until they are
    gone; the pids that outlived ``timeout`` ([] normally)."""
    pids = session_processes(sid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return wait_gone(pids, timeout)


def _socket_inodes(pid):
    """Inodes of the sockets ``pid`` holds open."""
    inodes = set()
    fd_dir = '/proc/%d/fd' % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(int(target[len('socket:['):-1]))
    return inodes


def listening_ports(pid):
    """TCP ports (IPv4 and IPv6) on which ``pid`` holds a listening socket;
    OSError when ``pid`` is gone."""
    held = _socket_inodes(pid)
    ports = set()
    for table in ('tcp', 'tcp6'):
        try:
            with open('/proc/%d/net/%s' % (pid, table)) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue   # no IPv6 in this kernel
        for row in rows:
            cols = row.split()
            # local_address is ADDR:PORT in hex; st 0A is TCP_LISTEN.
            if cols[3] == '0A' and int(cols[9]) in held:
                ports.add(int(cols[1].rsplit(':', 1)[1], 16))
    return ports
