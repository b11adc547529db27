"""asyncwatch on real listeners: a SIGIO per connection queued while armed,
even when another process accepts it at once; none once disarmed; a file
whose O_ASYNC someone else set is left alone."""
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

from supervisor_fcgi_ext.supervisord import asyncwatch

# accepts and closes every connection on fd 0, as a pool worker would
ACCEPTOR = ('import socket\nl = socket.socket(fileno=0)\n'
            'while True:\n    l.accept()[0].close()\n')


def settle(expected, timeout=2.0):
    """asyncwatch.signals() once it reaches ``expected`` (the handler runs
    between bytecodes), or its last value."""
    deadline = time.monotonic() + timeout
    while asyncwatch.signals() < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return asyncwatch.signals()


class AsyncWatchTests(unittest.TestCase):
    def setUp(self):
        self.addCleanup(signal.signal, signal.SIGIO, signal.getsignal(signal.SIGIO))
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.addCleanup(self.listener.close)
        self.fd = self.listener.fileno()

    def acceptor(self):
        worker = subprocess.Popen([sys.executable, '-c', ACCEPTOR], stdin=self.fd)
        self.addCleanup(worker.wait)
        self.addCleanup(worker.kill)
        return worker

    def connect(self, count):
        for _ in range(count):
            socket.create_connection(self.listener.getsockname()).close()

    def test_a_connection_another_process_accepts_at_once_still_signals(self):
        self.acceptor()
        self.assertFalse(asyncwatch.armed(self.fd))
        asyncwatch.arm(self.fd)
        self.assertTrue(asyncwatch.armed(self.fd))
        before = asyncwatch.signals()
        self.connect(3)
        self.assertGreaterEqual(settle(before + 1), before + 1)
        asyncwatch.disarm(self.fd)
        self.assertFalse(asyncwatch.armed(self.fd))
        time.sleep(0.1)
        before = asyncwatch.signals()
        self.connect(3)
        time.sleep(0.2)
        self.assertEqual(asyncwatch.signals(), before)

    def test_the_first_signal_disarms_so_a_busy_listener_sends_one(self):
        self.acceptor()
        asyncwatch.arm(self.fd)
        before = asyncwatch.signals()
        self.connect(1)
        settle(before + 1)
        self.assertFalse(asyncwatch.armed(self.fd))
        self.connect(20)
        time.sleep(0.2)
        self.assertEqual(asyncwatch.signals(), before + 1)

    def test_the_handler_comes_before_the_flag_and_another_handler_is_kept(self):
        signal.signal(signal.SIGIO, signal.SIG_DFL)
        asyncwatch.arm(self.fd)
        self.assertIsNot(signal.getsignal(signal.SIGIO), signal.SIG_DFL)
        asyncwatch.disarm(self.fd)
        other = lambda signum, frame: None   # noqa: E731 (someone else's handler)
        signal.signal(signal.SIGIO, other)
        asyncwatch.arm(self.fd)
        self.assertFalse(fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_ASYNC)
        self.assertIs(signal.getsignal(signal.SIGIO), other)

    def test_an_o_async_of_someone_else_is_left_alone(self):
        worker = self.acceptor()
        fcntl.fcntl(self.fd, fcntl.F_SETOWN, worker.pid)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_ASYNC)
        asyncwatch.arm(self.fd)
        self.assertFalse(asyncwatch.armed(self.fd))
        self.assertEqual(fcntl.fcntl(self.fd, fcntl.F_GETOWN), worker.pid)
        asyncwatch.disarm(self.fd)
        self.assertTrue(fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_ASYNC)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_ASYNC)

    def test_a_closed_fd_is_not_armed(self):
        sock = socket.socket()
        fd = sock.fileno()
        sock.close()
        asyncwatch.arm(fd)
        self.assertFalse(asyncwatch.armed(fd))


if __name__ == '__main__':
    unittest.main()
