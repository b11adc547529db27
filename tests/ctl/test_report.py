import unittest

from supervisor_fcgi_ext.ctl import report


def make_pool(**overrides):
    pool = {
        'name': 'app', 'socket': 'tcp://127.0.0.1:9001', 'socket_open': True,
        'socket_held': False, 'start_time': 0, 'start_since': 75,
        'listen_queue': 2, 'max_listen_queue': 5, 'listen_queue_len': 128,
        'listen_drops': -1, 'total_processes': 2, 'idle_processes': 1,
        'active_processes': 1, 'max_active_processes': 2, 'accepted_conn': 30,
        'requests': 30, 'requests_source': 'exact', 'connections': 1,
        'fairness': 0.9, 'balance': 1.33, 'slow_requests': 0,
        'terminated_requests': 0, 'warnings': [],
        'processes': [
            dict(name='app_00', pid=100, state='RUNNING', start=0, connections=1,
                 requests_source='exact', accepted_conn=20, requests=20,
                 worker_state='running', request_duration=1500000,
                 request_method='GET', request_uri='/slow?sleep=2',
                 content_length=0, last_request_cpu=1.0, last_request_memory=0),
            dict(name='app_01', pid=101, state='RUNNING', start=0, connections=0,
                 requests_source='exact', accepted_conn=10, requests=10,
                 worker_state='idle', request_duration=1000,
                 request_method='', request_uri='', content_length=0,
                 last_request_cpu=0.0, last_request_memory=0),
        ],
    }
    pool.update(overrides)
    return pool


class FormatPoolTests(unittest.TestCase):
    def test_shows_pool_figures_and_one_row_per_process(self):
        text = report.format_pool(make_pool())
        self.assertIn('pool app  tcp://127.0.0.1:9001  (socket open)', text)
        self.assertIn('listen queue 2  max 5  backlog 128  drops -', text)
        self.assertIn('requests 30 (exact)', text)
        rows = [line for line in text.splitlines() if 'app_0' in line]
        self.assertEqual(len(rows), 2)
        self.assertIn('#' * report.BAR_WIDTH, rows[0])
        self.assertIn('#' * (report.BAR_WIDTH // 2) + ' ', rows[1])
        self.assertIn('GET /slow?sleep=2', rows[0])
        self.assertIn('1500.0', rows[0])

    def test_marks_sampled_counts(self):
        pool = make_pool(requests_source='sampled')
        for p in pool['processes']:
            p['requests_source'] = 'sampled'
        text = report.format_pool(pool)
        self.assertIn('~20', text)
        self.assertIn('~ sampled', text)

    def test_shows_warnings_and_closed_socket(self):
        text = report.format_pool(make_pool(socket_open=False,
                                            warnings=['slot unreadable']))
        self.assertIn('(socket closed)', text)
        self.assertIn('warning: slot unreadable', text)

    def test_share_bar(self):
        self.assertEqual(report.share_bar(0, 10), '')
        self.assertEqual(report.share_bar(1, 1000), '#')
        self.assertEqual(report.share_bar(5, 0), '')

    def test_format_duration(self):
        self.assertEqual(report.format_duration(5), '5s')
        self.assertEqual(report.format_duration(75), '1m15s')
        self.assertEqual(report.format_duration(7200), '2h00m')
        self.assertEqual(report.format_duration(3 * 86400), '3d00h')
