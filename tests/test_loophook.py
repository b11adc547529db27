import os
import unittest

from supervisor.tests.base import DummyLogger

from supervisor_fcgi_ext.loophook import LoopHook


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class LoopHookTests(unittest.TestCase):
    def _makeOne(self, callback, interval=1.0):
        self.clock = FakeClock()
        self.socket_map = {}
        self.logger = DummyLogger()
        hook = LoopHook(callback, interval, self.logger, clock=self.clock,
                        socket_map=self.socket_map)
        self.addCleanup(hook.close)
        return hook

    def test_registers_under_its_own_fd(self):
        hook = self._makeOne(lambda: None)
        self.assertIs(self.socket_map[hook.fd], hook)
        os.fstat(hook.fd)  # a real, open fd: no other dispatcher can have it

    def test_calls_back_at_most_once_per_interval(self):
        calls = []
        hook = self._makeOne(lambda: calls.append(self.clock.now))
        for step in range(100):  # loop passes every 0.1 s for 10 s
            hook.readable()
            self.clock.now += 0.1
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        self.assertTrue(all(0.89 < gap < 1.01 for gap in gaps), gaps)
        self.assertIn(len(calls), (10, 11))

    def test_a_pass_slightly_early_does_not_double_the_interval(self):
        calls = []
        hook = self._makeOne(lambda: calls.append(self.clock.now))
        hook.readable()
        self.clock.now += 0.95  # supervisord's poll woke a little early
        hook.readable()
        self.assertEqual(len(calls), 2)

    def test_failure_is_logged_not_raised(self):
        def explode():
            raise ValueError('bad')
        hook = self._makeOne(explode)
        self.assertFalse(hook.readable())
        self.assertIn('bad', self.logger.data[0])

    def test_close_leaves_the_map_and_closes_its_pipe(self):
        hook = self._makeOne(lambda: None)
        fd = hook.fd
        hook.close()
        self.assertNotIn(fd, self.socket_map)
        self.assertRaises(OSError, os.fstat, fd)

    def test_close_spares_an_fd_number_that_is_someone_elses_now(self):
        hook = self._makeOne(lambda: None)
        fd = hook.fd
        os.close(hook.fd)         # supervisord's cleanup_fds before a reload
        os.close(hook._write_fd)
        other_r, other_w = os.pipe()  # reuses the numbers
        try:
            hook.close()
            os.fstat(other_r)  # still open
            os.fstat(other_w)
        finally:
            os.close(other_r)
            os.close(other_w)
        self.assertNotIn(fd, self.socket_map)
