"""Tests of sockstats against real sockets and real worker processes."""
import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

from supervisor_fcgi_ext.supervisord import asyncwatch, netlink, sockstats, tcpconns
from supervisor_fcgi_ext.supervisord.sockstats import (
    LimitReached, ListenerStats, SocketStatsError, accepted_inodes, connections_by_pid,
    held_connections, listener_stats)
from supervisor_fcgi_ext.supervisord.procfds import socket_inodes

# A pool worker: accepts argv[1] connections from the listener on fd 0, says
# "ready", then closes one connection per line read from fd argv[2] until EOF.
WORKER = r'''
import os, socket, sys
listener = socket.socket(fileno=0)
conns = [listener.accept()[0] for _ in range(int(sys.argv[1]))]
os.write(1, b"ready\n")
with os.fdopen(int(sys.argv[2])) as commands:
    for line in commands:
        conns.pop().close()
        os.write(1, b"closed\n")
'''


def inode(sock):
    return os.fstat(sock.fileno()).st_ino


def poll(fn, expected, timeout=2.0):
    """Return fn() once it equals expected, or its last value at timeout.

    Connections reach the accept queue asynchronously (the handshake
    finishes in softirq context), so figures are read until they settle.
    """
    deadline = time.monotonic() + timeout
    value = fn()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.005)
        value = fn()
    return value


class Sockets(object):
    """Owns every socket and temp dir a test makes; closes them on cleanup."""

    def setUp(self):
        self.socks = []
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.addCleanup(lambda: [s.close() for s in self.socks])

    def keep(self, sock):
        self.socks.append(sock)
        return sock

    def tcp_listener(self, backlog=5, host='127.0.0.1', port=0,
                     family=socket.AF_INET):
        sock = self.keep(socket.socket(family, socket.SOCK_STREAM))
        sock.bind((host, port))
        sock.listen(backlog)
        return sock

    def unix_listener(self, backlog=5, name='pool.sock'):
        sock = self.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        sock.bind(os.path.join(self.tmp, name))
        sock.listen(backlog)
        return sock

    def connect(self, listener, blocking=True):
        """Connect a client; a non-blocking one may still be in progress."""
        client = self.keep(socket.socket(listener.family, socket.SOCK_STREAM))
        client.setblocking(blocking)
        address = listener.getsockname()
        if listener.family == socket.AF_INET6:
            address = address[:2]
        err = client.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        return client


class TestListenerStatsTCP(Sockets, unittest.TestCase):
    def test_queue_counts_unaccepted_clients_up_to_backlog_plus_one(self):
        listener = self.tcp_listener(backlog=5)
        stats = lambda: listener_stats(listener)
        self.assertEqual(stats(), ListenerStats(0, 5, 0))
        for k in range(1, 7):
            self.connect(listener)
            self.assertEqual(poll(lambda: stats().queue, k), k)
        self.assertEqual(stats().backlog, 5)
        self.assertEqual(stats().drops, 0)
        for _ in range(3):
            self.connect(listener, blocking=False)
        self.assertTrue(poll(lambda: stats().drops > 0, True))
        self.assertEqual(stats().queue, 6)

    def test_accept_shrinks_queue(self):
        listener = self.tcp_listener()
        self.connect(listener)
        self.connect(listener)
        self.assertEqual(poll(lambda: listener_stats(listener).queue, 2), 2)
        self.keep(listener.accept()[0])
        self.assertEqual(listener_stats(listener).queue, 1)

    def test_backlog_is_capped_by_somaxconn(self):
        with open('/proc/sys/net/core/somaxconn') as f:
            somaxconn = int(f.read())
        listener = self.tcp_listener(backlog=somaxconn + 100)
        self.assertEqual(listener_stats(listener).backlog, somaxconn)

    def test_ipv6_listener(self):
        listener = self.tcp_listener(host='::1', family=socket.AF_INET6)
        self.connect(listener)
        self.assertEqual(poll(lambda: listener_stats(listener),
                              ListenerStats(1, 5, 0)), ListenerStats(1, 5, 0))


class TestListenerStatsUnix(Sockets, unittest.TestCase):
    def test_queue_counts_unaccepted_clients_and_drops_unknown(self):
        listener = self.unix_listener(backlog=5)
        self.assertEqual(listener_stats(listener), ListenerStats(0, 5, -1))
        for k in range(1, 7):
            self.connect(listener)
            self.assertEqual(listener_stats(listener), ListenerStats(k, 5, -1))
        # The kernel refuses the 8th instead of dropping it: nothing to count.
        with self.assertRaises(BlockingIOError):
            client = self.keep(socket.socket(socket.AF_UNIX))
            client.setblocking(False)
            client.connect(listener.getsockname())
        self.assertEqual(listener_stats(listener), ListenerStats(6, 5, -1))

    def test_unix_fd_wrapped_as_inet_like_flup_does(self):
        listener = self.unix_listener(backlog=3)
        wrapped = self.keep(socket.fromfd(listener.fileno(), socket.AF_INET,
                                          socket.SOCK_STREAM))
        self.connect(listener)
        self.assertEqual(listener_stats(wrapped), ListenerStats(1, 3, -1))
        self.assertEqual(accepted_inodes(wrapped), set())

    def test_abstract_namespace_listener(self):
        listener = self.keep(socket.socket(socket.AF_UNIX))
        listener.bind(b'\0sockstats-test-%d' % os.getpid())
        listener.listen(4)
        self.connect(listener)
        conn = self.keep(listener.accept()[0])
        self.assertEqual(listener_stats(listener), ListenerStats(0, 4, -1))
        self.assertEqual(accepted_inodes(listener), {inode(conn)})


class TestErrors(Sockets, unittest.TestCase):
    def assertStatsError(self, message, fn, *args):
        with self.assertRaises(SocketStatsError) as ctx:
            fn(*args)
        self.assertEqual(str(ctx.exception), message)

    def test_closed_socket(self):
        listener = self.tcp_listener()
        listener.close()
        for fn in (listener_stats, accepted_inodes):
            self.assertStatsError('socket is closed', fn, listener)
        self.assertStatsError('socket is closed', connections_by_pid,
                              listener, [os.getpid()])

    def test_fd_closed_behind_the_objects_back(self):
        listener = self.tcp_listener()
        os.close(listener.fileno())
        try:
            self.assertStatsError('socket is closed', listener_stats,
                                  listener)
        finally:
            listener.detach()

    def test_not_listening(self):
        bound = self.keep(socket.socket())
        bound.bind(('127.0.0.1', 0))
        udp = self.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        unix = self.keep(socket.socket(socket.AF_UNIX))
        unix.bind(os.path.join(self.tmp, 'bound'))
        for sock in (bound, udp, unix):
            for fn in (listener_stats, accepted_inodes):
                self.assertStatsError('socket is not listening', fn, sock)

    def test_not_a_socket(self):
        class PipeEnd(object):
            family = socket.AF_INET

            def __init__(self, fd):
                self.fd = fd

            def fileno(self):
                return self.fd

        r, w = os.pipe()
        try:
            self.assertStatsError(
                'not a usable socket: Socket operation on non-socket',
                listener_stats, PipeEnd(r))
        finally:
            os.close(r)
            os.close(w)

    def test_unsupported_family(self):
        diag = self.keep(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                       netlink.NETLINK_SOCK_DIAG))
        self.assertStatsError('unsupported socket family 16',
                              listener_stats, diag)

    def test_netlink_deadline(self):
        with mock.patch.object(netlink, 'NETLINK_TIMEOUT', 0.0):
            self.assertStatsError('sock_diag: no answer within 0.0 s',
                                  accepted_inodes, self.tcp_listener())

    def test_netlink_error_carries_errno_text(self):
        tcp = self.tcp_listener()  # no unix socket has this inode
        req = sockstats.UNIX_DIAG_REQ.pack(
            socket.AF_UNIX, 0, 0, inode(tcp), 0, 0xffffffff, 0xffffffff)
        self.assertStatsError('sock_diag: No such file or directory',
                              netlink.query, req, False)
        with self.assertRaises(netlink.KernelError) as caught:
            netlink.query(req, False)
        self.assertEqual(caught.exception.errno, errno.ENOENT)

    def test_no_fd_leak(self):
        listener = self.tcp_listener()
        unix = self.unix_listener()
        before = len(os.listdir('/proc/self/fd'))
        for _ in range(20):
            listener_stats(listener)
            listener_stats(unix)
            accepted_inodes(listener)
            accepted_inodes(unix)
            socket_inodes(os.getpid())
        self.assertEqual(len(os.listdir('/proc/self/fd')), before)


class TestPortFilter(Sockets, unittest.TestCase):
    @unittest.skipUnless(sys.byteorder == 'little', 'literal little-endian')
    def test_bytecode_bytes(self):
        self.assertEqual(tcpconns.port_filter([0x1234]), bytes([
            2, 8, 20, 0, 0, 0, 0x34, 0x12,   # S_GE port, else past the end
            3, 8, 12, 0, 0, 0, 0x34, 0x12]))  # S_LE port
        self.assertEqual(tcpconns.port_filter([0x1234, 80, 80]), bytes([
            2, 8, 20, 0, 0, 0, 80, 0,        # S_GE 80, else the next port
            3, 8, 12, 0, 0, 0, 80, 0,        # S_LE 80, else the next port
            1, 4, 20, 0,                     # JMP to the end
            2, 8, 20, 0, 0, 0, 0x34, 0x12,   # S_GE 0x1234, else past the end
            3, 8, 12, 0, 0, 0, 0x34, 0x12]))

    def test_one_dump_answers_several_listeners(self):
        # five ports: the kernel's audit takes the bytecode, and each port,
        # lowest, highest and between, gets its own connections only
        listeners = [self.tcp_listener() for _ in range(5)]
        conns = {}
        for listener in listeners:
            self.connect(listener)
            conns[tcpconns.listener_key(listener)] = self.keep(listener.accept()[0])
        asked = [tcpconns.listener_key(listener) for listener in listeners[::2]]
        found = tcpconns.dump(socket.AF_INET, asked)
        self.assertEqual(found, {key: [inode(conns[key])] for key in asked})

    def test_kernel_returns_only_the_filtered_port(self):
        # Ports below and above the target exercise both S_GE and S_LE.
        listeners = sorted((self.tcp_listener() for _ in range(3)),
                           key=lambda s: s.getsockname()[1])
        conns = []
        for listener in listeners:
            self.connect(listener)
            conns.append(self.keep(listener.accept()[0]))
        for listener, conn in zip(listeners, conns):
            self.assertEqual(accepted_inodes(listener), {inode(conn)})

    def test_same_port_on_another_address_is_not_counted(self):
        one = self.tcp_listener()
        two = self.tcp_listener(host='127.0.0.2', port=one.getsockname()[1])
        self.connect(one)
        self.connect(two)
        conn_one = self.keep(one.accept()[0])
        conn_two = self.keep(two.accept()[0])
        self.assertEqual(accepted_inodes(one), {inode(conn_one)})
        self.assertEqual(accepted_inodes(two), {inode(conn_two)})

    def test_wildcard_listeners_match_any_local_address(self):
        v4 = self.tcp_listener(host='0.0.0.0')
        dual = self.tcp_listener(host='::', family=socket.AF_INET6)
        for listener in (v4, dual):
            client = self.keep(socket.socket())
            client.connect(('127.0.0.1', listener.getsockname()[1]))
            conn = self.keep(listener.accept()[0])
            self.assertEqual(accepted_inodes(listener), {inode(conn)})

    def test_ipv6_specific_address(self):
        listener = self.tcp_listener(host='::1', family=socket.AF_INET6)
        self.connect(listener)
        conn = self.keep(listener.accept()[0])
        self.assertEqual(accepted_inodes(listener), {inode(conn)})


class PoolTests(Sockets):
    """Real workers sharing one listener on fd 0, as under supervisor."""

    def listener(self):
        raise NotImplementedError

    def spawn(self, listener, accepts, pass_fds=()):
        """Start a worker that accepts `accepts` connections; return it."""
        cmd_r, cmd_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, '-c', WORKER, str(accepts), str(cmd_r)],
                stdin=listener.fileno(), stdout=subprocess.PIPE,
                pass_fds=(cmd_r,) + tuple(pass_fds))
        except BaseException:
            os.close(cmd_w)
            raise
        finally:
            os.close(cmd_r)
        proc.commands = os.fdopen(cmd_w, 'w')
        self.addCleanup(self.stop, proc)
        return proc

    def stop(self, proc):
        proc.commands.close()  # EOF: the worker exits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()

    def expect_line(self, proc, line, timeout=10.0):
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        self.assertTrue(ready, 'worker %d did not say %r' % (proc.pid, line))
        self.assertEqual(proc.stdout.readline(), line)

    def test_counts_per_worker_and_ignores_queued(self):
        listener = self.listener()
        a = self.spawn(listener, 2)
        b = self.spawn(listener, 3)
        for _ in range(5):
            self.connect(listener)
        self.expect_line(a, b'ready\n')
        self.expect_line(b, b'ready\n')
        self.connect(listener)  # these two stay in the accept queue
        self.connect(listener)
        self.assertEqual(poll(lambda: listener_stats(listener).queue, 2), 2)
        self.assertEqual(len(accepted_inodes(listener)), 5)
        pids = [a.pid, b.pid, os.getpid()]
        self.assertEqual(connections_by_pid(listener, pids),
                         {a.pid: 2, b.pid: 3, os.getpid(): 0})
        a.commands.write('close\n')
        a.commands.flush()
        self.expect_line(a, b'closed\n')
        self.assertEqual(connections_by_pid(listener, pids),
                         {a.pid: 1, b.pid: 3, os.getpid(): 0})

    def test_connection_closed_by_client_counts_while_held(self):
        listener = self.listener()
        worker = self.spawn(listener, 2)
        clients = [self.connect(listener) for _ in range(2)]
        self.expect_line(worker, b'ready\n')
        for client in clients:
            client.close()
        self.assertEqual(connections_by_pid(listener, [worker.pid]),
                         {worker.pid: 2})

    def test_other_listener_does_not_leak_in(self):
        listener = self.listener()
        other = self.listener()
        worker = self.spawn(other, 2)
        self.connect(other)
        self.connect(other)
        self.expect_line(worker, b'ready\n')
        self.connect(listener)
        self.keep(listener.accept()[0])
        pids = [worker.pid, os.getpid()]
        self.assertEqual(connections_by_pid(listener, pids),
                         {worker.pid: 0, os.getpid(): 1})
        self.assertEqual(connections_by_pid(other, pids),
                         {worker.pid: 2, os.getpid(): 0})

    def test_inherited_connection_counts_for_each_holder(self):
        listener = self.listener()
        self.connect(listener)
        conn = self.keep(listener.accept()[0])
        heir = self.spawn(listener, 0, pass_fds=(conn.fileno(),))
        self.expect_line(heir, b'ready\n')
        self.assertEqual(connections_by_pid(listener, [heir.pid, os.getpid()]),
                         {heir.pid: 1, os.getpid(): 1})

    def test_idle_pool_and_exited_worker(self):
        listener = self.listener()
        worker = self.spawn(listener, 1)
        self.connect(listener)
        self.expect_line(worker, b'ready\n')
        self.assertEqual(connections_by_pid(listener, [worker.pid]),
                         {worker.pid: 1})
        self.stop(worker)
        self.assertEqual(accepted_inodes(listener), set())
        self.assertEqual(connections_by_pid(listener, [worker.pid]),
                         {worker.pid: 0})

    def accepted_here(self, listener):
        self.connect(listener)
        return self.keep(listener.accept()[0])

    def test_a_worker_over_the_fd_limit_is_unavailable_not_zero(self):
        listener = self.listener()
        self.accepted_here(listener)
        me = os.getpid()
        with mock.patch.object(sockstats, 'MAX_FDS_PER_PID', 4):
            held = held_connections(listener, [me])
        self.assertEqual(held.inodes, {})
        self.assertEqual(held.unavailable, {me: 'pid %d has more than 4 fds' % me})
        self.assertEqual(connections_by_pid(listener, [me]), {me: 1})

    def test_a_spent_time_budget_leaves_the_rest_unavailable(self):
        listener = self.listener()
        self.accepted_here(listener)
        me = os.getpid()
        with mock.patch.object(sockstats, 'WALK_BUDGET', -1.0):
            held = held_connections(listener, [me])
        self.assertEqual(held.inodes, {})
        self.assertIn('time budget', held.unavailable[me])


class TestPoolTCP(PoolTests, unittest.TestCase):
    def listener(self):
        return self.tcp_listener(backlog=16)

    def test_an_idle_pool_walks_no_fds(self):
        listener = self.listener()
        me = os.getpid()
        # a walk could not pass a limit of one fd: none was made
        with mock.patch.object(sockstats, 'MAX_FDS_PER_PID', 1):
            held = held_connections(listener, [me])
        self.assertEqual((held.inodes, held.unavailable), ({me: frozenset()}, {}))

    def test_a_dump_longer_than_the_bound_is_refused(self):
        listener = self.listener()
        for _ in range(3):
            self.accepted_here(listener)
        with mock.patch.object(netlink, 'MAX_DUMP_ENTRIES', 2):
            with self.assertRaises(LimitReached) as caught:
                accepted_inodes(listener)
        self.assertEqual(str(caught.exception),
                         'sock_diag: more than 2 sockets to look at')

    def snmp(self, opens):
        """A /proc/net/snmp of our own (other jobs on the host open connections)."""
        path = os.path.join(self.tmp, 'snmp')
        with open(path, 'w') as f:
            f.write('Ip: Forwarding\nIp: 1\nTcp: RtoAlgorithm ActiveOpens PassiveOpens\n'
                    'Tcp: 1 7 %d\nUdp: InDatagrams\nUdp: 3\n' % opens)
        self.enterContext(mock.patch.object(tcpconns, 'SNMP_PATH', path))

    def test_no_dump_while_no_connection_was_opened_since_an_empty_one(self):
        listener = self.listener()
        me = os.getpid()
        self.snmp(41)
        first = held_connections(listener, [me])
        self.assertEqual(first.inodes, {me: frozenset()})
        with mock.patch.object(tcpconns, 'query', side_effect=AssertionError('dumped')):
            again = held_connections(listener, [me], first.verdicts)
        self.assertEqual((again.inodes, again.verdicts), (first.inodes, first.verdicts))
        conn = self.accepted_here(listener)
        self.snmp(42)
        self.assertEqual(held_connections(listener, [me], again.verdicts).inodes,
                         {me: frozenset({inode(conn)})})

    def test_an_armed_idle_pool_is_not_dumped_while_its_listener_sends_no_sigio(self):
        self.addCleanup(signal.signal, signal.SIGIO, signal.getsignal(signal.SIGIO))
        listener = self.listener()
        self.addCleanup(asyncwatch.disarm, listener.fileno())
        me = os.getpid()
        made = self.counted_dumps()
        memory = None
        for opens in range(40, 45):   # other listeners of the host take connections
            self.snmp(opens)
            memory = held_connections(listener, [me], memory).verdicts
        # the first look arms the listener, the second's dump counts
        self.assertEqual(len(made), 2)
        self.assertTrue(asyncwatch.armed(listener.fileno()))
        with mock.patch.object(tcpconns, 'passive_opens', side_effect=AssertionError('read')):
            held_connections(listener, [me], memory)   # an armed look reads no counter
        conn = self.accepted_here(listener)
        deadline = time.monotonic() + 2
        while held_connections(listener, [me], memory).inodes != {me: frozenset({inode(conn)})}:
            self.assertLess(time.monotonic(), deadline)   # the SIGIO brings a dump
            time.sleep(0.01)
        held = held_connections(listener, [me], memory)
        self.assertFalse(asyncwatch.armed(listener.fileno()))   # busy: no signals
        self.assertEqual(held.verdicts, {})

    def test_a_connection_queued_at_the_dump_is_seen_once_accepted(self):
        listener = self.listener()
        me = os.getpid()
        self.snmp(41)
        self.connect(listener)                 # established, not accepted: inode 0
        first = held_connections(listener, [me])
        self.assertEqual(first.inodes, {me: frozenset()})
        conn = self.keep(listener.accept()[0])  # no new passive open
        self.assertEqual(held_connections(listener, [me], first.verdicts).inodes,
                         {me: frozenset({inode(conn)})})

    def test_passive_opens_is_the_kernels_counter_or_none(self):
        self.assertIsInstance(tcpconns.passive_opens(), int)
        self.assertIsNone(tcpconns.passive_opens(os.path.join(self.tmp, 'none')))
        path = os.path.join(self.tmp, 'garbage')
        with open(path, 'w') as f:
            f.write('Tcp: PassiveOpens\n')
        self.assertIsNone(tcpconns.passive_opens(path))

    def counted_dumps(self):
        """The keys of each dump made from now on (real dumps)."""
        made = []
        real = tcpconns.dump

        def dump(family, keys):
            made.append(sorted(keys))
            return real(family, keys)
        self.enterContext(mock.patch.object(tcpconns, 'dump', dump))
        return made

    def test_the_pools_of_one_pass_share_one_dump(self):
        one, two = self.listener(), self.listener()
        me = os.getpid()
        conns = [self.accepted_here(one), self.accepted_here(two)]
        keys = sorted(tcpconns.listener_key(s) for s in (one, two))
        dumps = tcpconns.TcpDumps()
        made = self.counted_dumps()
        for current in (1, 2, 2):
            held = [held_connections(listener, [me], tcp_dumps=(dumps, current)).inodes
                    for listener in (one, two)]
            self.assertEqual(held, [{me: frozenset({inode(conn)})} for conn in conns])
        # pass 1 learns which pools there are; pass 2 dumps them together
        self.assertEqual(made, [[tcpconns.listener_key(one)], [tcpconns.listener_key(two)],
                                keys])

    def test_looks_outside_a_pass_dump_afresh(self):
        listener = self.listener()
        me = os.getpid()
        dumps = tcpconns.TcpDumps()
        made = self.counted_dumps()
        self.assertEqual(held_connections(listener, [me], tcp_dumps=(dumps, None)).inodes,
                         {me: frozenset()})
        conn = self.accepted_here(listener)
        self.assertEqual(held_connections(listener, [me], tcp_dumps=(dumps, None)).inodes,
                         {me: frozenset({inode(conn)})})
        self.assertEqual(len(made), 2)

    def test_a_shared_dump_too_long_falls_back_to_the_pools_own(self):
        one, two = self.listener(), self.listener()
        me = os.getpid()
        for _ in range(3):
            self.accepted_here(one)
        conn = self.accepted_here(two)
        dumps = tcpconns.TcpDumps()
        for listener in (one, two):
            held_connections(listener, [me], tcp_dumps=(dumps, 1))
        made = self.counted_dumps()
        with mock.patch.object(netlink, 'MAX_DUMP_ENTRIES', 2):
            got = held_connections(two, [me], tcp_dumps=(dumps, 2))
        self.assertEqual(got.inodes, {me: frozenset({inode(conn)})})
        self.assertEqual(len(made), 2)


class TestPoolUnix(PoolTests, unittest.TestCase):
    def listener(self):
        return self.unix_listener(backlog=16, name='pool%d.sock' %
                                  len(self.socks))

    def test_an_idle_unix_pool_is_not_walked_whatever_its_workers_hold(self):
        listener = self.listener()
        other = socket.socketpair()        # established, but no connection of ours
        self.keep(other[0])
        self.keep(other[1])
        me = os.getpid()
        with mock.patch.object(sockstats, 'MAX_FDS_PER_PID', 1):   # a walk would fail
            held = held_connections(listener, [me])
        self.assertEqual((held.inodes, held.unavailable), ({me: frozenset()}, {}))
        conn = self.accepted_here(listener)
        with mock.patch.object(sockstats, '_unix_is_connection',
                               side_effect=AssertionError('looked up')):
            held = held_connections(listener, [me])
        self.assertEqual(held.inodes, {me: frozenset({inode(conn)})})

    def test_a_host_with_too_many_unix_sockets_is_walked_and_dumped_again_later(self):
        listener = self.listener()
        conn = self.accepted_here(listener)
        me = os.getpid()
        with mock.patch.object(sockstats, 'UNIX_DUMP_ENTRIES', 0), \
                mock.patch.object(sockstats, 'UNIX_DUMP_RETRY', 1):
            first = held_connections(listener, [me])        # dump refused: walked
            self.assertTrue(first.verdicts[inode(conn)])
            second = held_connections(listener, [me], first.verdicts)   # no dump
            third = held_connections(listener, [me], second.verdicts)   # refused again
        for held in (first, second, third):
            self.assertEqual(held.inodes, {me: frozenset({inode(conn)})})
        self.assertEqual([h.verdicts[0] for h in (first, second, third)], [1, 0, 1])

    def test_verdicts_spare_the_lookup_of_an_inode_seen_before(self):
        listener = self.listener()
        conn = self.accepted_here(listener)
        other = socket.socketpair()        # unix sockets that are no connection
        self.keep(other[0])
        self.keep(other[1])
        me = os.getpid()
        self.enterContext(mock.patch.object(sockstats, 'UNIX_DUMP_ENTRIES', 0))  # walked
        self.enterContext(mock.patch.object(sockstats, 'UNIX_DUMP_RETRY', 0))
        first = held_connections(listener, [me])
        self.assertEqual(first.inodes, {me: frozenset({inode(conn)})})
        self.assertTrue(first.verdicts[inode(conn)])
        self.assertFalse(first.verdicts[inode(other[0])])
        with mock.patch.object(sockstats, '_unix_is_connection',
                               side_effect=AssertionError('looked up again')):
            again = held_connections(listener, [me], first.verdicts)
        self.assertEqual(again.inodes, first.inodes)
        gone = inode(conn)
        conn.close()                        # a gone inode leaves the verdicts
        self.assertNotIn(gone, held_connections(listener, [me], first.verdicts).verdicts)

    def test_looks_cut_short_still_get_through_the_pool(self):
        """Where each lookup spends the whole time budget (a loaded host of
        200k unix sockets), looks starting with alternate workers must not
        forget what the other's look learnt, or no worker is ever read."""
        listener = self.listener()
        conn = self.accepted_here(listener)
        pairs = [socket.socketpair() for _ in range(2)]
        for pair in pairs:
            self.keep(pair[0])
            self.keep(pair[1])
        child = subprocess.Popen(['sleep', '30'], pass_fds=[p[0].fileno() for p in pairs])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        me = os.getpid()
        real = sockstats._unix_is_connection

        def slow(inode, name):
            time.sleep(sockstats.WALK_BUDGET * 1.2)
            return real(inode, name)
        self.enterContext(mock.patch.object(sockstats, 'UNIX_DUMP_ENTRIES', 0))   # walked
        self.enterContext(mock.patch.object(sockstats, 'UNIX_DUMP_RETRY', 100))
        self.enterContext(mock.patch.object(sockstats, '_unix_is_connection', slow))
        verdicts, read = None, {}
        for look in range(40):
            order = [me, child.pid] if look % 2 else [child.pid, me]
            held = held_connections(listener, order, verdicts)
            verdicts = held.verdicts
            read.update(held.inodes)
            if len(read) == 2:
                break
        self.assertEqual(read[child.pid], frozenset())
        self.assertEqual(read[me], frozenset({inode(conn)}))
