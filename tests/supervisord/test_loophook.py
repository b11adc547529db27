import os
import select
import time
import unittest

from supervisor.tests.base import DummyLogger

from supervisor_fcgi_ext.supervisord.loophook import REST_AFTER, LoopHook, current_call, timerfd


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class PassDrivenLoopHookTests(unittest.TestCase):
    """Without a timerfd: the callback runs on supervisord's loop passes."""
    def _makeOne(self, callback, interval=1.0):
        self.clock = FakeClock()
        self.socket_map = {}
        self.logger = DummyLogger()
        hook = LoopHook(callback, interval, self.logger, clock=self.clock,
                        socket_map=self.socket_map, use_timer=False)
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

    def test_each_call_has_its_own_number_and_none_outside(self):
        calls = []
        hook = self._makeOne(lambda: calls.append(current_call()))
        for _ in range(2):
            hook.readable()
            self.clock.now += 1.0
        self.assertIsNone(current_call())
        self.assertEqual(len(set(calls)), 2)
        self.assertNotIn(None, calls)
        hook = self._makeOne(lambda: 1 / 0)   # a failing call ends too
        hook.readable()
        self.assertIsNone(current_call())

    def test_close_leaves_the_map_and_closes_its_pipe(self):
        hook = self._makeOne(lambda: None)
        fd = hook.fd
        hook.close()
        self.assertNotIn(fd, self.socket_map)
        self.assertRaises(OSError, os.fstat, fd)

    def test_a_second_close_spares_the_numbers_given_to_someone_else(self):
        hook = self._makeOne(lambda: None)
        fd = hook.fd
        hook.close()
        other_r, other_w = os.pipe()  # reuses the numbers
        self.addCleanup(os.close, other_r)
        self.addCleanup(os.close, other_w)
        self.assertEqual(other_r, fd)
        hook.close()
        os.fstat(other_r)  # still open
        os.fstat(other_w)
        self.assertFalse(hook.readable())


class TimedLoopHookTests(unittest.TestCase):
    """With a timerfd: supervisord's poll wakes for us every interval."""

    def _makeOne(self, callback, interval=0.05):
        self.socket_map = {}
        self.logger = DummyLogger()
        hook = LoopHook(callback, interval, self.logger, socket_map=self.socket_map)
        self.addCleanup(hook.close)
        self.assertTrue(hook.timed)
        return hook

    def _loop(self, seconds):
        """What supervisord's loop does with our dispatcher, for a while."""
        poller = select.poll()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for fd, dispatcher in list(self.socket_map.items()):
                if dispatcher.readable():
                    poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(1000):
                self.socket_map[fd].handle_read_event()

    def test_wakes_the_loop_every_interval(self):
        calls = []
        self._makeOne(lambda: calls.append(time.monotonic()))
        self._loop(0.6)
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        self.assertGreaterEqual(len(calls), 8)
        self.assertLess(max(gaps), 0.1, gaps)  # never a 1 s poll timeout

    def test_a_closed_hook_never_reads_nor_closes_a_timerfd_given_its_number(self):
        hook = self._makeOne(lambda: None)
        fd = hook.fd
        hook.close()
        other = timerfd(0.01)         # another timer: same device, inode, mode
        self.addCleanup(os.close, other)
        self.assertEqual(other, fd)
        time.sleep(0.03)
        self.assertFalse(hook.readable())
        hook.handle_read_event()      # a poll result of the pass it closed in
        hook.close()
        self.assertNotIn(fd, self.socket_map)
        self.assertGreaterEqual(int.from_bytes(os.read(other, 8), 'little'), 1)

    def test_failure_is_logged_not_raised(self):
        def explode():
            raise ValueError('bad tick')
        self._makeOne(explode)
        self._loop(0.12)
        self.assertIn('bad tick', self.logger.data[0])


class RestingLoopHookTests(unittest.TestCase):
    """A timed hook whose callback keeps finding nothing leaves the poll and
    runs on the loop's own passes; the first news brings the timer back."""

    def setUp(self):
        self.clock = FakeClock()
        self.socket_map = {}
        self.quiet = True
        self.calls = 0

    def callback(self):
        self.calls += 1
        return self.quiet

    def _makeOne(self, interval=0.01):
        hook = LoopHook(self.callback, interval, DummyLogger(), clock=self.clock,
                        socket_map=self.socket_map)
        self.addCleanup(hook.close)
        self.assertTrue(hook.timed)
        return hook

    def _tick(self, hook):
        time.sleep(0.02)
        hook.handle_read_event()

    def test_rests_after_quiet_calls_and_wakes_on_news(self):
        hook = self._makeOne()
        for _ in range(REST_AFTER):
            self.assertTrue(hook.readable())   # polled: the timer wakes the loop
            self._tick(hook)
        self.assertEqual(self.calls, REST_AFTER)
        self.assertFalse(hook.readable())      # resting, and not due yet
        self.assertEqual(self.calls, REST_AFTER)
        self.clock.now += 1                    # the loop's next pass, a second on
        self.assertFalse(hook.readable())
        self.assertEqual(self.calls, REST_AFTER + 1)
        self.quiet = False
        self.clock.now += 1
        self.assertTrue(hook.readable())       # news: polled again at once
        self.assertEqual(self.calls, REST_AFTER + 2)
        self.assertFalse(hook.resting)

    def test_a_call_with_news_starts_the_count_again(self):
        hook = self._makeOne()
        for quiet in [True] * (REST_AFTER - 1) + [None] + [True] * (REST_AFTER - 1):
            self.quiet = quiet
            self._tick(hook)
        self.assertFalse(hook.resting)
        self.assertTrue(hook.readable())

    def test_a_failing_callback_is_never_quiet(self):
        def explode():
            raise ValueError('bad tick')
        hook = LoopHook(explode, 0.01, DummyLogger(), socket_map=self.socket_map,
                        rest_after=1)
        self.addCleanup(hook.close)
        self._tick(hook)
        self.assertFalse(hook.resting)

    def test_a_resting_hook_wakes_a_real_poll_loop_once_a_second_at_most(self):
        hook = LoopHook(self.callback, 0.02, DummyLogger(), socket_map=self.socket_map)
        self.addCleanup(hook.close)
        poller = select.poll()
        wakes, deadline = 0, time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for fd, dispatcher in list(self.socket_map.items()):
                if dispatcher.readable():
                    poller.register(fd, select.POLLIN)
            ready = poller.poll(1000)            # supervisord's 1 s timeout
            wakes += 1
            for fd, _ in ready:
                self.socket_map[fd].handle_read_event()
                if not self.socket_map[fd].readable():
                    poller.unregister(fd)
        self.assertTrue(hook.resting)
        self.assertLessEqual(wakes, REST_AFTER + 3)   # not 1.5 / 0.02 = 75
