"""Socket activation against a real listening socket, polled the way
supervisord's own loop polls its socket map (supervisor's PollPoller)."""
import socket
import unittest

from supervisor.poller import PollPoller
from supervisor.tests.base import DummyLogger

from supervisor_fcgi_ext.supervisord.activation import Activation
from supervisor_fcgi_ext.supervisord.sockstats import listener_stats


def loop_pass(socket_map, poller, timeout=0.05):
    """One pass of supervisord.runforever's dispatching, as it is written."""
    combined = dict(socket_map)
    for fd, dispatcher in combined.items():
        if dispatcher.readable():
            poller.register_readable(fd)
    readable, _ = poller.poll(timeout)
    for fd in readable:
        if fd in combined:
            dispatcher = combined[fd]
            try:
                dispatcher.handle_read_event()
                if not dispatcher.readable():
                    poller.unregister_readable(fd)
            except Exception:
                combined[fd].handle_error()
        else:
            poller.unregister_readable(fd)
    return readable


class ActivationTests(unittest.TestCase):
    def setUp(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(8)
        self.addCleanup(self.listener.close)
        self.map = {}
        self.poller = PollPoller(None)
        self.logger = DummyLogger()
        self.calls = []

    def activation(self, callback=None):
        return Activation(self.listener, callback or (lambda: self.calls.append(1)),
                          self.logger, socket_map=self.map)

    def connect(self):
        client = socket.create_connection(self.listener.getsockname())
        self.addCleanup(client.close)
        client.sendall(b'hello')
        return client

    def test_nothing_happens_without_a_connection(self):
        self.activation()
        for _ in range(3):
            self.assertEqual(loop_pass(self.map, self.poller), [])
        self.assertEqual(self.calls, [])
        self.assertIn(self.listener.fileno(), self.map)

    def test_a_connection_calls_back_once_and_is_left_for_the_worker(self):
        activation = self.activation()
        self.connect()
        for _ in range(5):
            loop_pass(self.map, self.poller)
        self.assertEqual(self.calls, [1])
        self.assertFalse(activation.readable())
        self.assertEqual(self.map, {})
        # never accepted nor read: still queued, its bytes all there
        self.assertEqual(listener_stats(self.listener).queue, 1)
        conn, _ = self.listener.accept()
        with conn:
            self.assertEqual(conn.recv(16), b'hello')

    def test_a_waiting_connection_does_not_make_the_loop_spin(self):
        self.activation()
        self.connect()
        woken = [loop_pass(self.map, self.poller, timeout=0.01) for _ in range(20)]
        self.assertEqual(sum(1 for r in woken if r), 1)
        self.assertEqual(self.calls, [1])

    def test_closed_socket_leaves_the_map(self):
        activation = self.activation()
        self.listener.close()
        self.assertFalse(activation.readable())
        self.assertEqual(self.map, {})

    def test_never_displaces_a_dispatcher_with_the_same_fd(self):
        other = object()
        self.map[self.listener.fileno()] = other
        activation = self.activation()
        self.assertFalse(activation.armed)
        activation.close()
        self.assertIs(self.map[self.listener.fileno()], other)
        self.assertIn('cannot watch socket fd', self.logger.data[0])

    def test_a_failing_callback_is_logged_not_raised(self):
        def boom():
            raise RuntimeError('boom')
        self.activation(boom)
        self.connect()
        loop_pass(self.map, self.poller)
        self.assertEqual(self.map, {})
        self.assertIn("socket activation failed: RuntimeError('boom')",
                      self.logger.data[-1])

    def test_close_before_a_connection(self):
        activation = self.activation()
        activation.close()
        self.connect()
        self.assertEqual(loop_pass(self.map, self.poller), [])
        self.assertEqual(self.calls, [])


if __name__ == '__main__':
    unittest.main()
