"""The /proc/PID/fd walk: a process's sockets, a dead one's none, the limit."""
import os
import subprocess
import sys
import unittest

from supervisor_fcgi_ext.supervisord.netlink import LimitReached
from supervisor_fcgi_ext.supervisord.procfds import socket_inodes
from test_sockstats import Sockets, inode


class TestSocketInodes(Sockets, unittest.TestCase):
    def test_own_sockets_are_listed(self):
        listener = self.tcp_listener()
        unix = self.unix_listener()
        self.assertLessEqual({inode(listener), inode(unix)},
                             socket_inodes(os.getpid()))

    def test_dead_process_has_none(self):
        proc = subprocess.Popen([sys.executable, '-c', ''])
        proc.wait(timeout=10)
        self.assertEqual(socket_inodes(proc.pid), set())

    def test_more_fds_than_the_limit_is_refused_not_walked(self):
        with self.assertRaisesRegex(LimitReached, 'pid %d has more than 3 fds' % os.getpid()):
            socket_inodes(os.getpid(), limit=3)
