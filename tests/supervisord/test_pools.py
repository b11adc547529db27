"""PoolMonitor on plain views over real sockets and real slot files.

The monitor's memory between looks: sampled connections counted once however
many samples see them, exited workers' counts kept in the totals, resets,
and unreadable slots reported as warnings.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from unittest import mock

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import loophook, slots, sockstats, tcpconns
from supervisor_fcgi_ext.worker import slotwriter
from supervisor_fcgi_ext.supervisord.pools import PoolMonitor, PoolView, ProcessView


class PoolMonitorTestBase(unittest.TestCase):
    def setUp(self):
        self.board = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.board, True)
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.addCleanup(self.listener.close)
        self.held = []

    def view(self, pids, sock=True):
        return PoolView('app', 'tcp://127.0.0.1:%d' % self.listener.getsockname()[1],
                        16, self.listener if sock else None,
                        [ProcessView('app_%02d' % i, pid, 'RUNNING', 0)
                         for i, pid in enumerate(pids)], False)

    def hold_connection(self):
        """A connection accepted, and so held, by this very process."""
        client = socket.create_connection(self.listener.getsockname())
        server, _ = self.listener.accept()
        self.held.append((client, server))
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        return client, server

    def writer(self, pid):
        directory = slots.ensure_pool_dir(self.board, 'app')
        writer = slotwriter.SlotWriter(directory, pid=pid)
        self.addCleanup(writer.close)
        return writer

    def serve(self, writer, count):
        for _ in range(count):
            writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/x'}, accepted=True)
            writer.request_finished(status=200)


class SampledWorkerTests(PoolMonitorTestBase):
    def test_a_connection_seen_by_many_samples_counts_once(self):
        monitor = PoolMonitor('app', None)
        me = os.getpid()
        client, server = self.hold_connection()
        for _ in range(3):
            monitor.sample(self.view([me]))
        status = monitor.status(self.view([me]))
        process = status['processes'][0]
        self.assertEqual((process['requests'], process['connections']), (1, 1))
        self.assertEqual(process['requests_source'], 'sampled')
        self.assertEqual(process['worker_state'], 'running')
        client.close()
        server.close()
        self.hold_connection()
        monitor.sample(self.view([me]))
        self.assertEqual(monitor.status(self.view([me]))['requests'], 2)

    def test_an_exited_workers_sampled_count_stays_in_the_totals(self):
        monitor = PoolMonitor('app', None)
        me = os.getpid()
        self.hold_connection()
        monitor.sample(self.view([me]))
        monitor.process_exited(me)
        status = monitor.status(self.view([]))
        self.assertEqual((status['requests'], status['processes']), (1, []))

    def test_a_connection_held_across_a_reset_is_not_counted_again(self):
        monitor = PoolMonitor('app', None)
        me = os.getpid()
        self.hold_connection()
        monitor.sample(self.view([me]))
        monitor.reset(self.view([me]))
        monitor.sample(self.view([me]))
        self.assertEqual(monitor.status(self.view([me]))['requests'], 0)

    def test_a_closed_socket_gives_no_figures_and_no_error(self):
        status = PoolMonitor('app', None).status(self.view([1234], sock=False))
        self.assertFalse(status['socket_open'])
        self.assertEqual((status['listen_queue'], status['listen_drops']), (0, -1))
        self.assertEqual(status['warnings'], [])


class ExactWorkerTests(PoolMonitorTestBase):
    def test_counts_come_from_the_slots(self):
        self.serve(self.writer(101), 3)
        self.serve(self.writer(102), 1)
        status = PoolMonitor('app', self.board).status(self.view([101, 102]))
        self.assertEqual([p['requests'] for p in status['processes']], [3, 1])
        self.assertEqual(status['requests_source'], 'exact')
        self.assertEqual((status['requests'], status['accepted_conn']), (4, 4))
        self.assertAlmostEqual(status['fairness'], 16 / 20)
        self.assertEqual(status['balance'], 1.5)

    def test_exited_workers_final_counts_stay_and_reset_clears(self):
        monitor = PoolMonitor('app', self.board)
        self.serve(self.writer(101), 3)
        self.serve(self.writer(102), 2)
        monitor.process_exited(101)      # harvested: read once more, removed
        self.assertFalse(os.path.exists(scoreboard.slot_path(self.board, 'app', 101)))
        status = monitor.status(self.view([102]))
        self.assertEqual((status['requests'], status['request_duration_count']), (5, 5))
        self.assertEqual(status['request_duration_buckets'][-1][1], 5)
        monitor.reset(self.view([102]))
        status = monitor.status(self.view([102]))
        self.assertEqual((status['requests'], status['request_duration_count']), (0, 0))
        self.serve(self.writer(102), 1)  # same pid, a fresh slot
        self.assertEqual(monitor.status(self.view([102]))['requests'], 0)

    def test_counts_since_a_reset_are_counted_from_the_baseline(self):
        monitor = PoolMonitor('app', self.board)
        writer = self.writer(101)
        self.serve(writer, 3)
        monitor.reset(self.view([101]))
        self.serve(writer, 2)
        status = monitor.status(self.view([101]))
        self.assertEqual((status['requests'], status['processes'][0]['requests']), (2, 2))
        self.assertEqual(status['request_duration_count'], 2)
        monitor.process_exited(101)     # its exit adds what it did since the reset
        status = monitor.status(self.view([]))
        self.assertEqual((status['requests'], status['request_duration_count']), (2, 2))

    def test_lifecycle_counts_stay_across_exits_and_reset_clears(self):
        monitor = PoolMonitor('app', self.board)
        for _ in range(3):
            monitor.process_started('app_00')
        monitor.process_started('app_01')
        self.serve(slotwriter.SlotWriter(slots.ensure_pool_dir(self.board, 'app'),
                                         pid=101, max_requests=2), 2)
        monitor.process_exited(101, 'app_00', 'expected')    # its own max-requests
        monitor.process_exited(102, 'app_01', 'unexpected')
        monitor.process_exited(103, 'app_01', 'stopped')
        monitor.record_recycle('app_01')                     # fcgi-guard's
        monitor.record('terminated_requests', 'app_00')
        status = monitor.status(self.view([]))
        self.assertEqual({k: status[k] for k in ('respawns', 'unexpected_exits', 'recycles',
                                                 'guard_kills', 'terminated_requests')},
                         {'respawns': 2, 'unexpected_exits': 1, 'recycles': 2,
                          'guard_kills': 1, 'terminated_requests': 1})
        self.serve(self.writer(104), 1)      # an expected exit before max-requests
        monitor.process_exited(104, 'app_00', 'expected')
        status = monitor.status(self.view([]))
        self.assertEqual((status['recycles'], status['requests']), (2, 3))
        monitor.reset(self.view([]))
        monitor.process_started('app_00')        # started before: a respawn
        status = monitor.status(self.view([]))
        self.assertEqual((status['respawns'], status['recycles']), (1, 0))

    def test_a_pool_mixing_both_kinds_says_so(self):
        self.serve(self.writer(101), 2)
        status = PoolMonitor('app', self.board).status(self.view([101, os.getpid()]))
        self.assertEqual(status['requests_source'], 'mixed')
        self.assertEqual([p['requests_source'] for p in status['processes']],
                         ['exact', 'sampled'])

    def test_an_unreadable_slot_is_a_warning_and_the_worker_counts_as_sampled(self):
        slots.ensure_pool_dir(self.board, 'app')
        with open(scoreboard.slot_path(self.board, 'app', 101), 'wb') as f:
            f.write(b'garbage' * 100)
        status = PoolMonitor('app', self.board).status(self.view([101]))
        self.assertEqual(len(status['warnings']), 1)
        self.assertTrue(status['warnings'][0].startswith('app_00: scoreboard slot '
                                                          'unreadable: '))
        self.assertEqual(status['processes'][0]['requests_source'], 'sampled')

    def test_a_missing_slot_is_no_warning(self):
        status = PoolMonitor('app', self.board).status(self.view([101]))
        self.assertEqual(status['warnings'], [])


class DummyLogger:
    def __init__(self):
        self.lines = []

    def warn(self, message):
        self.lines.append(message)


class BoundsTests(PoolMonitorTestBase):
    def test_a_bound_hit_is_a_warning_every_time_and_logged_once(self):
        logger = DummyLogger()
        monitor = PoolMonitor('app', None, logger=logger)
        me = os.getpid()
        self.hold_connection()
        with mock.patch.object(sockstats, 'MAX_FDS_PER_PID', 2), \
                mock.patch.object(sockstats, 'WALK_BUDGET', 60.0):  # only the fd bound
            monitor.sample(self.view([me]))
            status = monitor.status(self.view([me]))
            monitor.status(self.view([me]))
        reason = 'pid %d has more than 2 fds' % me
        self.assertEqual(status['warnings'], ['app_00: connections unavailable: ' + reason])
        self.assertEqual(status['processes'][0]['connections'], -1)
        self.assertEqual(status['processes'][0]['worker_state'], 'unknown')
        self.assertEqual((status['connections'], status['idle_processes']), (0, 0))
        self.assertEqual(logger.lines, ['fcgi: pool app: connections unavailable: ' + reason])

    def test_an_idle_tcp_pool_is_not_walked_whatever_its_workers_hold(self):
        monitor = PoolMonitor('app', None, logger=DummyLogger())
        with mock.patch.object(sockstats, 'MAX_FDS_PER_PID', 1):
            status = monitor.status(self.view([os.getpid()]))
        self.assertEqual((status['warnings'], status['processes'][0]['connections']), ([], 0))
        self.assertEqual(monitor.logger.lines, [])


class SharedDumpTests(PoolMonitorTestBase):
    def test_the_tcp_pools_sampled_in_one_hook_call_share_one_dump(self):
        other = socket.socket()
        other.bind(('127.0.0.1', 0))
        other.listen(16)
        self.addCleanup(other.close)
        me = os.getpid()
        self.hold_connection()
        client = socket.create_connection(other.getsockname())
        self.addCleanup(client.close)
        self.addCleanup(other.accept()[0].close)
        views = [self.view([me]), self.view([me])._replace(name='api', sock=other)]
        monitors = [PoolMonitor(view.name, None) for view in views]
        made = []
        real = tcpconns.dump

        def dump(family, keys):
            made.append(len(keys))
            return real(family, keys)

        def sample_all():
            for monitor, view in zip(monitors, views):
                monitor.sample(view)
        hook = loophook.LoopHook(sample_all, 1.0, DummyLogger(), socket_map={},
                                 use_timer=False)
        self.addCleanup(hook.close)
        with mock.patch.object(tcpconns, 'dump', dump), \
                mock.patch.object(tcpconns, 'passive_opens', lambda: None):
            for _ in range(3):
                hook.due = 0
                hook.readable()
            # the first pass learns the pools, then one dump a pass for both
            self.assertEqual(made, [1, 1, 2, 2])
            statuses = [monitor.status(view) for monitor, view in zip(monitors, views)]
        self.assertEqual([s['processes'][0]['connections'] for s in statuses], [1, 1])
        self.assertEqual(made[4:], [1, 1])    # a status dumps afresh


class QuietTests(PoolMonitorTestBase):
    """A sample says when it found nothing going on, so the sampling may rest
    (loophook): only a look with nothing busy, queued, held or changed."""

    def test_an_idle_exact_pool_is_quiet_until_a_request(self):
        monitor = PoolMonitor('app', self.board)
        writer = self.writer(101)
        view = self.view([101, 102])          # 102 writes no slot
        self.assertFalse(monitor.sample(view))    # first look: slots are news
        self.assertTrue(monitor.sample(view))
        writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/x'}, accepted=True)
        writer.request_finished(status=200, closing=True)   # between two samples
        self.assertFalse(monitor.sample(view))
        self.assertTrue(monitor.sample(view))
        writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/x'}, accepted=True)
        self.assertFalse(monitor.sample(view))
        self.assertFalse(monitor.sample(view))    # busy: never quiet
        writer.request_finished(status=200)
        self.assertFalse(monitor.sample(view))    # keep-alive: reading the next
        writer.closed()
        self.assertFalse(monitor.sample(view))
        self.assertTrue(monitor.sample(view))
        self.assertEqual(monitor.max_active_processes, 1)

    def test_a_held_connection_or_a_queue_is_not_quiet(self):
        monitor = PoolMonitor('app', None)
        view = self.view([os.getpid()])
        self.assertTrue(monitor.sample(view))
        client, server = self.hold_connection()
        self.assertFalse(monitor.sample(view))
        server.close()
        client.close()
        queued = socket.create_connection(self.listener.getsockname())
        self.addCleanup(queued.close)
        self.assertFalse(monitor.sample(view))     # waiting for accept
        self.listener.accept()[0].close()
        self.assertTrue(monitor.sample(view))

    def test_an_exited_or_closed_workers_kept_fd_is_closed(self):
        monitor = PoolMonitor('app', self.board)
        self.writer(101)
        self.writer(102)
        monitor.sample(self.view([101, 102]))
        fds = {pid: entry.fd for pid, entry in monitor.slot_cache._entries.items()}
        self.assertEqual(sorted(fds), [101, 102])
        monitor.process_exited(101)
        self.assertRaises(OSError, os.fstat, fds[101])
        os.fstat(fds[102])
        monitor.close()
        self.assertRaises(OSError, os.fstat, fds[102])


class GivenAgainTests(PoolMonitorTestBase):
    """What a status gives again where nothing changed equals what a twin
    monitor makes from scratch, on real slot files and a real stopped
    process, whatever moved between two statuses."""

    def test_statuses_given_again_equal_statuses_made_afresh(self):
        child = subprocess.Popen(['sleep', '60'])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.addCleanup(os.kill, child.pid, signal.SIGCONT)
        kept, fresh = PoolMonitor('app', self.board), PoolMonitor('app', self.board)
        fresh.memo = None
        for monitor in (kept, fresh):    # a settled directory: one pread a slot
            monitor.slot_cache.clock = lambda: time.time() + 10
        pids = [101, 102, child.pid]
        writers = {pid: self.writer(pid) for pid in pids}
        time.sleep(0.05)                 # the files made, past the directory's tick

        def same(pids=pids):
            """The two statuses, less what the clock moves (entries are
            shared between statuses: read, never changed)."""
            got = []
            for monitor in (kept, fresh):
                status = monitor.status(self.view(pids))
                got.append(dict(status, start_time=0, start_since=0, processes=[
                    dict(p, request_duration=p['request_duration'] >= 0)
                    for p in status['processes']]))
            self.assertEqual(got[0], got[1])
            return got[0]

        def both(method, *args):
            for monitor in (kept, fresh):
                getattr(monitor, method)(*args)

        same()
        same()
        self.serve(writers[101], 2)
        self.assertEqual(same()['requests'], 2)
        writers[102].request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/slow'},
                                     accepted=True)
        self.assertEqual(same()['processes'][1]['worker_state'], 'running')
        self.assertEqual(same()['processes'][1]['request_uri'], '/slow')
        writers[102].request_finished(status=200)
        self.assertEqual(same()['request_duration_count'], 3)
        os.kill(child.pid, signal.SIGSTOP)
        with open('/proc/%d/stat' % child.pid, 'rb') as f:
            while f.read().rpartition(b')')[2].split()[0] != b'T':
                f.seek(0)
        self.assertEqual(same()['frozen_processes'], 1)
        os.kill(child.pid, signal.SIGCONT)
        with open('/proc/%d/stat' % child.pid, 'rb') as f:
            while f.read().rpartition(b')')[2].split()[0] == b'T':
                f.seek(0)
        self.assertEqual(same()['frozen_processes'], 0)
        both('reset', self.view(pids))
        self.assertEqual(same()['requests'], 0)
        self.serve(writers[101], 1)
        both('process_started', 'app_00')
        both('process_started', 'app_00')
        both('record', 'terminated_requests', 'app_01')
        status = same()
        self.assertEqual((status['requests'], status['respawns'], status['guard_kills']),
                         (1, 1, 1))
        path = writers[101].path      # each monitor harvests the exited worker's slot
        os.link(path, path + '.kept')
        kept.process_exited(101, 'app_00', 'unexpected')
        os.rename(path + '.kept', path)
        fresh.process_exited(101, 'app_00', 'unexpected')
        status = same([0, 102, child.pid])
        self.assertEqual((status['requests'], status['unexpected_exits']), (1, 1))
