"""fcgi-guard's command line: options, one-line errors, credentials."""
import io
import os
import unittest


class ParseArgsTests(unittest.TestCase):
    def parse(self, *argv):
        from supervisor_fcgi_ext.guard.listener import parse_args
        return parse_args(list(argv))

    def test_policies(self):
        args = self.parse('--pool', 'a', '--pool', 'b', '--crash-threshold', '5/60',
                          '--slowlog-timeout', '1.5', '--slowlog', '/x',
                          '--slowlog-signal', 'sigusr2')
        self.assertEqual(args.pools, ['a', 'b'])
        self.assertEqual(args.crash_threshold, (5, 60.0))
        self.assertEqual(args.slowlog_signal, 'USR2')
        self.assertEqual((args.grace, args.rpc_timeout), (2.0, 10.0))

    def test_wrong_options_are_one_line_and_exit_2(self):
        from contextlib import redirect_stderr
        for argv in ([], ['--request-timeout', '0'], ['--queue-alarm', '101'],
                     ['--crash-threshold', '5'], ['--crash-threshold', '0/60'],
                     ['--max-requests', '0'], ['--slowlog-timeout', '5'],
                     ['--slowlog', '/x', '--max-requests', '1'],
                     ['--request-timeout', '5', '--grace', '11'],
                     ['--request-timeout', '5', '--rpc-timeout', '0'],
                     ['--slowlog-signal', 'NOPE', '--max-requests', '1'],
                     ['--max-requests', '1', 'extra']):
            err = io.StringIO()
            with redirect_stderr(err), self.assertRaises(SystemExit) as cm:
                self.parse(*argv)
            self.assertEqual(cm.exception.code, 2, argv)
            self.assertEqual(len(err.getvalue().splitlines()), 1, argv)
            self.assertTrue(err.getvalue().startswith('fcgi-guard: error: '), argv)

    def test_credentials_from_options_override_the_environment(self):
        from supervisor_fcgi_ext.guard.listener import make_rpc
        env = {'SUPERVISOR_SERVER_URL': 'unix:///run/s.sock',
               'SUPERVISOR_USERNAME': 'env-user', 'SUPERVISOR_PASSWORD': 'env-pw'}
        transport = make_rpc(self.parse('--max-requests', '1', '--password', 'pw',
                                        '--rpc-timeout', '2.5'), env)('transport')
        self.assertEqual((transport.serverurl, transport.username, transport.password,
                          transport.timeout),
                         ('unix:///run/s.sock', 'env-user', 'pw', 2.5))

    def test_main_outside_supervisor_says_so(self):
        from contextlib import redirect_stderr
        from supervisor_fcgi_ext.guard.listener import main
        err = io.StringIO()
        env = os.environ.pop('SUPERVISOR_SERVER_URL', None)
        try:
            with redirect_stderr(err):
                self.assertEqual(main(['--max-requests', '5']), 2)
        finally:
            if env is not None:
                os.environ['SUPERVISOR_SERVER_URL'] = env
        self.assertIn('must be run as a supervisor event listener', err.getvalue())
