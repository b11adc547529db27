"""The socket hold: a pool's listening socket kept open while none of its
workers runs, released when the pool goes; real sockets, supervisor's own
SocketManager and configs parsed by supervisor."""
import os
import socket

from supervisor.socket_manager import SocketManager
from supervisor.tests.base import DummyLogger

from supervisor_fcgi_ext.supervisord.holds import (SocketHolds, kept_open_by_plugin,
                                                   remove_unix_socket_file)
from test_rolling import FakeSupervisord, TempDirTestCase, parse


class SocketHoldTests(TempDirTestCase):
    def _manager(self):
        config = parse(self.dir)[0].socket_config
        return SocketManager(config)

    def test_hold_keeps_the_socket_open_after_the_last_worker(self):
        group = FakeSupervisord(parse(self.dir)).process_groups['app']
        holds = SocketHolds(DummyLogger())
        holds.hold(group)
        holds.hold(group)                  # idempotent
        group.worker_refs = []
        for proc in group.processes.values():
            proc.exit()
        self.assertTrue(kept_open_by_plugin(group))
        client = socket.socket(socket.AF_UNIX)
        client.connect(os.path.join(self.dir, 'app.sock'))   # waits, not refused
        client.close()
        holds.release('app')
        self.assertFalse(group.socket_manager.is_prepared())

    def test_no_hold_on_a_closed_socket_unless_asked(self):
        group = FakeSupervisord(parse(self.dir)).process_groups['app']
        group.worker_refs = []
        holds = SocketHolds(DummyLogger())
        holds.hold(group)
        self.assertFalse(holds.is_holding('app'))
        holds.hold(group, open_socket=True)
        self.assertTrue(group.socket_manager.is_prepared())
        holds.release_all()
        self.assertFalse(group.socket_manager.is_prepared())

    def test_remove_unix_socket_file_only_removes_sockets(self):
        config = parse(self.dir)[0].socket_config
        sock = config.create_and_bind()
        sock.close()
        self.assertEqual(remove_unix_socket_file(config), config.path)
        self.assertFalse(os.path.exists(config.path))
        self.assertIsNone(remove_unix_socket_file(config))   # already gone
        with open(config.path, 'w'):
            pass
        self.assertIsNone(remove_unix_socket_file(config))   # not a socket
        self.assertTrue(os.path.exists(config.path))
