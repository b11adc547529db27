"""readings: one look at a pool gathered into plain facts (real processes,
real sockets, real slot files)."""
import os
import signal
import socket
import subprocess
import sys
from unittest import mock

from supervisor_fcgi_ext.supervisord import readings, slots, sockstats
from supervisor_fcgi_ext.worker import slotwriter

from test_pools import PoolMonitorTestBase   # its neighbour: board, listener, view

# a child whose name holds ') T (' as a trap for a naive /proc/PID/stat parser
CHILD = r'''
import sys, time
with open('/proc/self/comm', 'w') as f:
    f.write(sys.argv[1])
print('ready', flush=True)
time.sleep(60)
'''


class ReadingsTests(PoolMonitorTestBase):
    def child(self, name='worker'):
        proc = subprocess.Popen([sys.executable, '-c', CHILD, name], stdout=subprocess.PIPE)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        self.addCleanup(os.kill, proc.pid, signal.SIGCONT)
        self.assertEqual(proc.stdout.readline(), b'ready\n')
        return proc

    def stopped(self, proc):
        os.kill(proc.pid, signal.SIGSTOP)
        with open('/proc/%d/stat' % proc.pid, 'rb') as f:  # wait until it is
            while f.read().rpartition(b')')[2].split()[0] != b'T':
                f.seek(0)

    def test_frozen_pids_are_those_a_signal_stopped(self):
        running, stopped = self.child(), self.child('x) T (y')
        self.stopped(stopped)
        gone = subprocess.Popen(['true'])
        gone.wait()
        self.assertEqual(readings.frozen_pids([running.pid, stopped.pid, gone.pid]),
                         {stopped.pid})

    def test_a_busy_worker_is_not_read_as_frozen(self):
        proc = self.child()
        writer = slotwriter.SlotWriter(slots.ensure_pool_dir(self.board, 'app'),
                                       pid=proc.pid)
        self.addCleanup(writer.close)
        writer.request_started({'REQUEST_METHOD': 'GET', 'REQUEST_URI': '/'}, accepted=True)
        self.stopped(proc)
        facts = readings.gather(self.view([proc.pid]), self.board)
        self.assertEqual(facts.frozen, frozenset())
        writer.request_finished(status=200, closing=True)
        facts = readings.gather(self.view([proc.pid]), self.board)
        self.assertEqual(facts.frozen, {proc.pid})
        self.assertEqual(readings.gather(self.view([proc.pid]), self.board,
                                         states=False).frozen, frozenset())

    def test_each_look_starts_with_the_next_worker(self):
        seen = []

        def spy(sock, pids, verdicts=None, tcp_dumps=None):
            seen.append(list(pids))
            return sockstats.Held({}, {}, {})
        with mock.patch.object(sockstats, 'held_connections', side_effect=spy):
            for turn in range(4):
                readings.gather(self.view([11, 12, 13]), None, turn=turn)
        self.assertEqual(seen, [[11, 12, 13], [12, 13, 11], [13, 11, 12], [11, 12, 13]])

    def test_a_failed_read_makes_every_figure_unavailable_with_a_warning(self):
        closed = socket.socket()
        closed.close()
        facts = readings.gather(self.view([os.getpid()])._replace(sock=closed), None)
        self.assertEqual(facts.listener, sockstats.ListenerStats(-1, -1, -1))
        self.assertEqual(facts.unavailable, {os.getpid(): 'socket is closed'})
        self.assertEqual(facts.warnings, ['socket figures unavailable: socket is closed',
                                          'app_00: connections unavailable: socket is closed'])
