"""fcgi_status and fcgi_restart (controllerplugin.py).

Unit tests run the commands against the REAL fcgi namespace
(FcgiNamespaceRPCInterface) bound to supervisor's DummySupervisor, as
supervisor_cache tests its plugin; calls go through XML-RPC marshalling and
supervisor's own traverse(), so faults and types are the wire's.  The last
section runs real supervisorctl against real supervisord for every bad
option: 'Error: <one line>', the usage, exit status 2.
"""
import json
import os
import shutil
import tempfile
import unittest
import xmlrpc.client

import pytest
from supervisor import events
from supervisor.datatypes import UnixStreamSocketConfig
from supervisor.socket_manager import SocketManager
from supervisor.states import ProcessStates
from supervisor.tests.base import (DummyFCGIGroupConfig, DummyFCGIProcessGroup,
                                   DummyOptions, DummyPConfig, DummyProcess,
                                   DummySupervisor)
from supervisor.xmlrpc import RootRPCInterface, RPCError, traverse

from supervisor_fcgi_ext.ctl import controllerplugin
from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface


class WireProxy:
    """What supervisorctl's get_server_proxy('fcgi') reaches, without the
    HTTP: arguments and answers are marshalled as XML-RPC, the method found
    by supervisor's traverse(), an RPCError comes back as a Fault.  Before
    each call, ``tick`` runs what supervisord's loop would have run."""

    def __init__(self, root, namespace, tick=lambda: None):
        self.root = root
        self.namespace = namespace
        self.tick = tick
        self.calls = []

    def __getattr__(self, method):
        def call(*args):
            self.tick()
            self.calls.append((method,) + args)
            request = xmlrpc.client.dumps(args, '%s.%s' % (self.namespace, method))
            params, name = xmlrpc.client.loads(request)
            try:
                result = traverse(self.root, name, params)
            except RPCError as e:
                raise xmlrpc.client.Fault(e.code, e.text)
            response = xmlrpc.client.dumps((result,), methodresponse=True)
            return xmlrpc.client.loads(response)[0][0]
        return call


class DummyController:
    def __init__(self, proxy):
        self.proxy = proxy
        self.lines = []
        self.exitstatus = 0
        self.upchecks = 0

    def upcheck(self):
        self.upchecks += 1
        return True

    def output(self, line):
        self.lines.append(line)

    def get_server_proxy(self, namespace):
        assert namespace == 'fcgi'
        return self.proxy


class ControllerPluginTestBase(unittest.TestCase):
    numprocs = 2

    def setUp(self):
        events.clear()
        self.addCleanup(events.clear)
        self.dir = tempfile.mkdtemp(prefix='sfe-ctl-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        options = DummyOptions()
        self.supervisord = DummySupervisor(options)
        pconfigs = [DummyPConfig(options, 'app_%02d' % i, '/bin/true')
                    for i in range(self.numprocs)]
        config = DummyFCGIGroupConfig(
            options, 'app', pconfigs=pconfigs,
            socket_config=UnixStreamSocketConfig(os.path.join(self.dir, 'app.sock')))
        group = DummyFCGIProcessGroup(config)
        group.socket_manager = SocketManager(config.socket_config)
        group.processes = {p.name: DummyProcess(p) for p in pconfigs}
        for i, process in enumerate(group.processes.values()):
            process.pid = 100 + i
        self.supervisord.process_groups['app'] = group
        self.rpc = make_fcgi_rpcinterface(self.supervisord, scoreboard_dir='none')
        self.addCleanup(self._close_hooks)
        self.root = RootRPCInterface([('fcgi', self.rpc)])
        controllerplugin.POLL_INTERVAL = 0
        self.addCleanup(setattr, controllerplugin, 'POLL_INTERVAL', 0.2)

    def _close_hooks(self):
        for hook in (self.rpc.plugin.hook, self.rpc.plugin.stepper):
            if hook is not None:
                hook.close()

    def loop_pass(self):
        """What a pass of supervisord's loop runs of ours: the restart
        stepper, while it is hooked in."""
        if self.rpc.plugin.stepper is not None:
            self.rpc.plugin.step_restarts()

    def run_command(self, command, arg, namespace='fcgi'):
        proxy = WireProxy(self.root, namespace, tick=self.loop_pass)
        ctl = DummyController(proxy)
        plugin = controllerplugin.make_fcgi_controllerplugin(ctl)
        getattr(plugin, 'do_' + command)(arg)
        return ctl


class FcgiStatusTests(ControllerPluginTestBase):
    def test_all_pools_as_text(self):
        ctl = self.run_command('fcgi_status', '')
        self.assertEqual(ctl.exitstatus, 0)
        [text] = ctl.lines
        self.assertTrue(text.startswith('pool app  unix://%s/app.sock  (socket '
                                        % self.dir), text)
        self.assertIn('\n  processes 2  active 0  idle 2', text)
        self.assertEqual([l.split()[0] for l in text.splitlines()[6:8]],
                         ['app_00', 'app_01'])
        self.assertEqual(ctl.proxy.calls, [('getAllPoolStatus',)])

    def test_json_is_the_rpc_answer(self):
        ctl = self.run_command('fcgi_status', '--json app')
        self.assertEqual(ctl.exitstatus, 0)
        [pool] = json.loads(ctl.lines[0])
        expected = self.rpc.getPoolStatus('app')
        self.assertEqual(set(pool), set(expected))
        self.assertEqual(pool['processes'][1]['pid'], 101)

    def test_unknown_pool_is_one_line_and_status_4(self):
        ctl = self.run_command('fcgi_status', 'nope')
        self.assertEqual(ctl.lines, ['nope: ERROR (no such pool)'])
        self.assertEqual(ctl.exitstatus, 4)

    def test_unknown_among_known_pools(self):
        ctl = self.run_command('fcgi_status', 'nope app')
        self.assertEqual(ctl.lines[0], 'nope: ERROR (no such pool)')
        self.assertTrue(ctl.lines[1].startswith('pool app  '))
        self.assertEqual(ctl.exitstatus, 4)

    def test_no_pools_says_so(self):
        del self.supervisord.process_groups['app']
        ctl = self.run_command('fcgi_status', '')
        self.assertEqual(ctl.lines, ['No fcgi-program pools configured'])

    def test_without_the_namespace_says_what_to_add(self):
        ctl = self.run_command('fcgi_status', '', namespace='nofcgi')
        self.assertEqual(ctl.lines, [controllerplugin.NO_NAMESPACE])
        self.assertEqual(ctl.exitstatus, 5)

    def test_bad_options_print_error_and_usage_and_call_nothing(self):
        for arg in ('--jsno', 'app -x', "'", 'a\x01'):
            ctl = self.run_command('fcgi_status', arg)
            self.assertTrue(ctl.lines[0].startswith('Error: '), arg)
            self.assertIn('fcgi_status --json [<pool> ...]', '\n'.join(ctl.lines[1:]))
            self.assertEqual(ctl.exitstatus, 2)
            self.assertEqual((ctl.proxy.calls, ctl.upchecks), ([], 0))


class FcgiRestartTests(ControllerPluginTestBase):
    def test_prints_each_progress_line_once_and_restarts_every_worker(self):
        ctl = self.run_command('fcgi_restart', 'app --batch 2')
        self.assertEqual(ctl.exitstatus, 0, ctl.lines)
        self.assertEqual(ctl.lines[0], 'app: rolling restart of 2 workers, 2 at a '
                                       'time, current config')
        self.assertEqual(len(ctl.lines), len(set(ctl.lines)))
        self.assertTrue(ctl.lines[-1].startswith('app: done: 2 workers replaced'),
                        ctl.lines)
        self.assertEqual(ctl.proxy.calls[0], ('rollingRestart', 'app', 2, False))
        for process in self.supervisord.process_groups['app'].processes.values():
            self.assertTrue(process.stop_called and process.spawned)

    def test_failed_replacement_is_error_and_status_1(self):
        group = self.supervisord.process_groups['app']

        def fail_spawn():
            process.state = ProcessStates.FATAL
        process = group.processes['app_00']
        process.spawn = fail_spawn
        ctl = self.run_command('fcgi_restart', 'app')
        self.assertTrue(ctl.lines[-1].startswith(
            'app: ERROR (app:app_00 failed to start (FATAL'), ctl.lines)
        self.assertEqual(ctl.exitstatus, 1)

    def test_fault_from_the_start_is_one_line(self):
        self.rpc.rollingRestart('app', 1, False)     # one is running already
        ctl = self.run_command('fcgi_restart', 'app')
        self.assertEqual(len(ctl.lines), 1)
        self.assertRegex(ctl.lines[0], r'^app: ERROR \(ALREADY_RESTARTING: ')
        self.assertEqual(ctl.exitstatus, 1)

    def test_unknown_pool_is_one_line_and_status_4(self):
        ctl = self.run_command('fcgi_restart', 'nope')
        self.assertEqual(ctl.lines, ['nope: ERROR (no such pool)'])
        self.assertEqual(ctl.exitstatus, 4)

    def test_bad_options_print_error_and_usage_and_call_nothing(self):
        for arg in ('', 'a b', 'app --batch', 'app --batch 0', 'app --batch=x',
                    'app -x', 'app --batch ²', 'app --batch 99999999999'):
            ctl = self.run_command('fcgi_restart', arg)
            self.assertTrue(ctl.lines[0].startswith('Error: '), arg)
            self.assertEqual(len(ctl.lines[0].splitlines()), 1)
            self.assertIn('fcgi_restart <pool> [--batch N]', ctl.lines[1])
            self.assertEqual(ctl.exitstatus, 2)
            self.assertEqual((ctl.proxy.calls, ctl.upchecks), ([], 0))

    def test_largest_batch_reaches_the_server(self):
        """2**31 - 1 is carried by XML-RPC; the server takes the whole pool."""
        ctl = self.run_command('fcgi_restart', 'app --batch 2147483647')
        self.assertEqual(ctl.exitstatus, 0, ctl.lines)
        self.assertIn('2 at a time', ctl.lines[0])


# -- real supervisorctl, real supervisord ----------------------------------------

@pytest.fixture(scope='module')
def running_supervisor():
    with Supervisor([PoolSpec(command='sleep 100', numprocs=1)]) as sup:
        yield sup


RESTART_USAGE = 'fcgi_restart <pool> [--batch N]\tRolling restart: replace N workers'
STATUS_USAGE = 'fcgi_status\t\t\tStatus of all fcgi-program pools'


@pytest.mark.parametrize('args, error', [
    (['fcgi_restart', 'app', '--batch', '²'],
     "--batch needs a whole number from 1 to 2147483647, not '²'"),
    (['fcgi_restart', 'app', '--batch', '99999999999'],
     "--batch needs a whole number from 1 to 2147483647, not '99999999999'"),
    (['fcgi_restart', 'app', '--batch', '0'],
     "--batch needs a whole number from 1 to 2147483647, not '0'"),
    (['fcgi_restart', 'app', '--batch=x'],
     "--batch needs a whole number from 1 to 2147483647, not 'x'"),
    (['fcgi_restart', 'app', '--batch'], '--batch needs a value'),
    (['fcgi_restart'], 'fcgi_restart takes one pool name, not 0'),
    (['fcgi_restart', 'app', 'other'], 'fcgi_restart takes one pool name, not 2'),
    (['fcgi_restart', 'app', '--force'], 'unknown option --force'),
    (['fcgi_restart', 'app', '"'], 'cannot read the arguments: no closing quotation'),
    (['fcgi_status', '--jsno'], 'unknown option --jsno'),
    (['fcgi_status', "'"], 'cannot read the arguments: no closing quotation'),
    (['fcgi_status', 'a\x01'],
     "a pool name cannot contain control characters: 'a\\x01'"),
    (['fcgi_status', 'a\udcff'], "a pool name must be UTF-8: 'a\\udcff'"),
])
def test_real_supervisorctl_bad_option_is_error_usage_and_status_2(
        running_supervisor, args, error):
    result = running_supervisor.ctl(*args)
    lines = result.stdout.splitlines()
    assert (result.returncode, lines[0], result.stderr) == (2, 'Error: ' + error, '')
    usage = RESTART_USAGE if args[0] == 'fcgi_restart' else STATUS_USAGE
    assert lines[1].startswith(usage)
    assert 'Traceback' not in result.stdout


def test_real_supervisorctl_good_options_still_work(running_supervisor):
    result = running_supervisor.ctl('fcgi_status', '--json', 'app')
    assert result.returncode == 0 and json.loads(result.stdout)[0]['name'] == 'app'
    result = running_supervisor.ctl('fcgi_status', 'nope')
    assert (result.returncode, result.stdout) == (4, 'nope: ERROR (no such pool)\n')


def test_bad_option_is_status_2_without_a_server(tmp_path):
    """The command line is checked before supervisord is asked anything."""
    sup = Supervisor([PoolSpec()], workdir=str(tmp_path))
    sup.write_config()   # never started: nobody listens on its port
    result = sup.ctl('fcgi_restart', 'app', '--batch', '²')
    assert result.returncode == 2
    assert result.stdout.startswith('Error: --batch needs a whole number')
    assert sup.ctl('fcgi_restart', 'app').returncode != 2   # refused connection
