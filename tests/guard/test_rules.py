"""fcgi-guard's pure decisions (rules.py): the listen-queue alarm's
episodes, the crash window and the stack found in a worker's log."""
import unittest

from guardfakes import DUMP, FakeClock


class QueueWatchTests(unittest.TestCase):
    def _makeOne(self, percent=80):
        from supervisor_fcgi_ext.guard.rules import QueueWatch
        return QueueWatch(percent)

    def changes(self, watch, checks):
        return [watch.check(*c)[0] for c in checks]

    def test_two_bad_checks_raise_two_good_clear(self):
        watch = self._makeOne()
        full, low = (7, 8, 0), (6, 8, 0)         # 7/8 >= 80 %, 6/8 < 80 %
        self.assertEqual(self.changes(watch, [full, low, full, full, full, low, full,
                                              low, low, full, full]),
                         [None, None, None, 'raise', None, None, None,
                          None, 'clear', None, 'raise'])

    def test_new_drops_are_bad_checks(self):
        watch = self._makeOne()
        self.assertEqual(self.changes(watch, [(0, 8, 5), (0, 8, 6), (0, 8, 9)]),
                         [None, None, 'raise'])
        self.assertEqual(watch.check(0, 8, 12)[1], ['3 new drops'])

    def test_unknown_figures_and_a_new_socket_are_not_bad(self):
        watch = self._makeOne()
        self.assertEqual(self.changes(watch, [(-1, -1, -1), (-1, -1, -1), (0, 8, 40),
                                              (0, 8, 0), (0, 0, 0), (0, 0, 0)]),
                         [None] * 6)
        self.assertFalse(watch.alarmed)


class CrashWatchTests(unittest.TestCase):
    def test_window_slides(self):
        from supervisor_fcgi_ext.guard.rules import CrashWatch
        clock = FakeClock()
        watch = CrashWatch(2, 10, clock)
        self.assertFalse(watch.exited())
        clock.t += 11
        self.assertFalse(watch.exited())       # the first one left the window
        clock.t += 1
        self.assertTrue(watch.exited())
        self.assertFalse(watch.exited())
        self.assertFalse(watch.cleared())
        clock.t += 10
        self.assertTrue(watch.cleared())
        self.assertFalse(watch.cleared())


class ExtractStackTests(unittest.TestCase):
    def test_dump_between_log_lines(self):
        from supervisor_fcgi_ext.guard.rules import extract_stack
        text = 'fcgi-worker[1]: a\n' + DUMP + '\nfcgi-worker[1]: b\n'
        self.assertEqual(extract_stack(text), DUMP.rstrip())

    def test_single_thread_dump_and_nothing(self):
        from supervisor_fcgi_ext.guard.rules import extract_stack
        one = 'Stack (most recent call first):\n  File "x.py", line 1 in f\n'
        self.assertEqual(extract_stack(one), one.rstrip())
        self.assertEqual(extract_stack('Traceback (most recent call last):\n  x\n'), '')
