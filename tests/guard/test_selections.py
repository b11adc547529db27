"""fcgi-guard's choices (selections.py) on statuses the real PoolMonitor
builds from plain views, a real listening socket and real slot files, so a
change of the status schema cannot pass unnoticed."""
import shutil
import socket
import tempfile
import time
import unittest

from supervisor_fcgi_ext.common.scoreboard import Slot, encode_slot, slot_path
from supervisor_fcgi_ext.guard.selections import (
    in_request, is_crash, next_recycle, queue_figures, slow_requests, stuck_requests)
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir

from guardfakes import pool, proc


class RealStatusTestBase(unittest.TestCase):
    def setUp(self):
        self.board = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.board, True)
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(8)
        self.addCleanup(self.listener.close)
        self.processes = []

    def worker(self, pid, state='idle', running_for=0.0, requests=0, uri='/',
               process_state='RUNNING'):
        """A worker of pool app whose slot says ``state`` since
        ``running_for`` seconds, after ``requests`` requests."""
        name = 'app_%02d' % len(self.processes)
        self.processes.append(ProcessView(name, pid, process_state, time.time() - 60))
        self.write_slot(pid, state, running_for, requests, uri)
        return name

    def write_slot(self, pid, state, running_for, requests, uri='/'):
        ensure_pool_dir(self.board, 'app')
        slot = Slot(pid=pid, start_time=time.time() - 60, state=state, requests=requests,
                    accepted_conn=requests, request_method='GET', request_uri=uri,
                    request_start=time.time() - running_for,
                    last_request_duration_us=int(running_for * 1e6))
        with open(slot_path(self.board, 'app', pid), 'wb') as f:
            f.write(encode_slot(slot, seq=2))

    def status(self):
        view = PoolView('app', 'tcp://127.0.0.1:%d' % self.listener.getsockname()[1],
                        8, self.listener, self.processes, False)
        return PoolMonitor('app', self.board).status(view)

    @staticmethod
    def names(procs):
        return sorted(p['name'] for p in procs)


class RequestSelectionTests(RealStatusTestBase):
    def test_stuck_requests_are_those_running_past_the_timeout(self):
        stuck = self.worker(101, 'running', 31.0, 4, uri='/?sleep=60')
        finishing = self.worker(102, 'finishing', 40.0)
        self.worker(103, 'running', 29.0)
        self.worker(104, 'idle', 100.0)         # the last request's duration
        self.worker(105, 'reading', 40.0)       # a silent client: not the app's
        handled = self.worker(106, 'running', 50.0)
        self.worker(107, 'running', 50.0, process_state='STOPPING')
        chosen = stuck_requests(self.status(), 30, {'app:' + handled})
        self.assertEqual(self.names(chosen), [stuck, finishing])
        first = next(p for p in chosen if p['name'] == stuck)
        self.assertEqual((first['pid'], first['request_method'], first['request_uri']),
                         (101, 'GET', '/?sleep=60'))
        self.assertGreaterEqual(first['request_duration'], 31e6)

    def test_a_slow_request_is_new_once_however_long_it_runs(self):
        slow = self.worker(101, 'running', 6.0, 3)
        self.worker(102, 'running', 4.0)
        new, over = slow_requests(self.status(), 5, set())
        self.assertEqual(self.names(new), [slow])
        self.assertEqual(over, {(101, 3)})
        again, over = slow_requests(self.status(), 5, over)
        self.assertEqual((again, over), ([], {(101, 3)}))
        self.write_slot(101, 'running', 7.0, 4)     # the worker's next request
        new, over = slow_requests(self.status(), 5, over)
        self.assertEqual((self.names(new), over), ([slow], {(101, 4)}))

    def test_in_request_skips_stopped_workers(self):
        self.processes.append(ProcessView('app_00', 0, 'BACKOFF', 0))
        running = self.worker(101, 'running', 1.0)
        self.assertEqual(self.names(in_request(self.status())), [running])


class RecycleSelectionTests(RealStatusTestBase):
    def test_idle_first_then_the_one_with_most_requests(self):
        self.worker(101, 'running', 0.1, 12)
        idle = self.worker(102, 'idle', 0.1, 15)
        most = self.worker(103, 'running', 0.1, 20)
        status = self.status()
        self.assertEqual(next_recycle(status, 10)['name'], idle)
        self.assertEqual(next_recycle(status, 10, {'app:' + idle})['name'], most)
        self.assertIsNone(next_recycle(status, 21))

    def test_never_the_last_running_worker(self):
        self.processes.append(ProcessView('app_00', 0, 'BACKOFF', 0))
        self.worker(101, 'idle', 0, 50)
        self.assertIsNone(next_recycle(self.status(), 10))


class QueueAndCrashSelectionTests(RealStatusTestBase):
    def test_queue_figures_are_the_sockets(self):
        self.worker(101)
        clients = [socket.create_connection(self.listener.getsockname())
                   for _ in range(3)]
        try:
            queue, backlog, drops = queue_figures(self.status())
        finally:
            for client in clients:
                client.close()
        self.assertEqual((queue, backlog), (3, 8))
        self.assertGreaterEqual(drops, 0)

    def test_unexpected_exits_and_backoff_are_crashes(self):
        self.assertTrue(is_crash('EXITED', {'expected': '0'}))
        self.assertTrue(is_crash('BACKOFF', {}))
        self.assertFalse(is_crash('EXITED', {'expected': '1'}))
        self.assertFalse(is_crash('STOPPED', {}))


class FakeStatusShapeTests(RealStatusTestBase):
    def test_the_unit_tests_statuses_have_the_real_fields_and_types(self):
        """test_listener's hand-made statuses must be real ones, cut down."""
        self.worker(101, 'running', 1.0)
        real = self.status()
        fake = pool('app', proc('app_00', 101, 'running', 1.0))
        self.assertLessEqual(set(fake), set(real))
        self.assertLessEqual(set(fake['processes'][0]), set(real['processes'][0]))
        for key, value in fake.items():
            self.assertIsInstance(value, type(real[key]), key)
        for key, value in fake['processes'][0].items():
            self.assertIsInstance(value, type(real['processes'][0][key]), key)
