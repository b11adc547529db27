"""The event reader (protocol.py) on real pipes: events framed by characters,
in pieces, and every malformed header refused in bounded time."""
import os
import threading
import time
import unittest

from supervisor_fcgi_ext.guard import protocol
from supervisor_fcgi_ext.guard.protocol import BadEvent, EventReader, parse_headers


class ParseHeadersTests(unittest.TestCase):
    def test_a_supervisor_header(self):
        headers = parse_headers('ver:3.0 server:supervisor serial:21 pool:guard '
                                'poolserial:10 eventname:TICK_5 len:15')
        self.assertEqual((headers['eventname'], headers['len']), ('TICK_5', 15))

    def test_malformed_headers_are_bad_events_with_one_line(self):
        for line, why in [('ver3.0 len:0', 'is not name:value'),
                          (':x len:0', 'is not name:value'),
                          ('ver:3.0 eventname:TICK_5', 'no len'),
                          ('', 'no len'),
                          ('len:abc', 'is not a count'),
                          ('len:-5', 'is not a count'),
                          ('len:1.5', 'is not a count'),
                          ('len:\u0661', 'is not a count'),     # a digit, not ASCII
                          ('len:%d' % (protocol.MAX_PAYLOAD + 1), 'is over the'),
                          ('len:' + '9' * 40, 'is not a count')]:
            with self.assertRaises(BadEvent) as cm:
                parse_headers(line)
            self.assertIn(why, str(cm.exception), line)
            self.assertNotIn('\n', str(cm.exception))


class EventReaderTests(unittest.TestCase):
    def setUp(self):
        self.read_fd, self.write_fd = os.pipe()
        self.addCleanup(os.close, self.read_fd)
        self.reader = EventReader(self.read_fd)

    def write(self, text):
        os.write(self.write_fd, text.encode('utf-8') if isinstance(text, str) else text)

    def close(self):
        os.close(self.write_fd)
        self.write_fd = None

    def tearDown(self):
        if self.write_fd is not None:
            os.close(self.write_fd)

    def test_len_counts_characters_and_pieces_are_joined(self):
        payload = 'processname:caf\u00e9 groupname:app'
        data = ('ver:3.0 eventname:PROCESS_STATE_RUNNING len:%d\n%s'
                % (len(payload), payload)).encode('utf-8')
        cut = data.index(b'\xa9')               # inside the two bytes of the e acute
        writer = threading.Timer(0.2, self.write, [data[cut:]])
        self.write(data[:cut])
        writer.start()
        headers, got = self.reader.next_event()
        writer.join()
        self.assertEqual((headers['eventname'], got), ('PROCESS_STATE_RUNNING', payload))

    def test_events_one_after_the_other_then_eof(self):
        self.write('eventname:TICK_5 len:3\nabceventname:TICK_60 len:0\n')
        self.close()
        self.assertEqual(self.reader.next_event()[1], 'abc')
        self.assertEqual(self.reader.next_event()[0]['eventname'], 'TICK_60')
        self.assertIsNone(self.reader.next_event())

    def test_eof_inside_an_event_is_the_end(self):
        self.write('eventname:TICK_5 len:30\nwhen:1')
        self.close()
        self.assertIsNone(self.reader.next_event())

    def test_a_short_payload_is_refused_after_the_wait_and_discarded(self):
        self.write('eventname:TICK_5 len:100\nwhen:1')
        start = time.monotonic()
        with self.assertRaises(BadEvent) as cm:
            self.reader.next_event()
        elapsed = time.monotonic() - start
        self.assertIn('payload incomplete after 2 s: 6 of 100 characters', str(cm.exception))
        self.assertGreaterEqual(elapsed, protocol.REST_WAIT)
        self.assertLess(elapsed, protocol.REST_WAIT + 1)
        self.write('eventname:TICK_5 len:0\n')     # the next event starts clean
        self.assertEqual(self.reader.next_event()[1], '')

    def test_an_endless_header_line_is_refused(self):
        self.write('x' * (protocol.MAX_HEADER + 10))
        with self.assertRaises(BadEvent) as cm:
            self.reader.next_event()
        self.assertIn('header line longer than', str(cm.exception))

    def test_leftovers_of_a_bad_event_are_discarded(self):
        self.write('len:%d\n' % (protocol.MAX_PAYLOAD * 2) + 'x' * 1000)
        with self.assertRaises(BadEvent):
            self.reader.next_event()
        self.write('eventname:TICK_5 len:1\nz')
        self.assertEqual(self.reader.next_event()[1], 'z')
