"""Unit tests of the fcgi namespace on supervisor's dummies.

The figures themselves are checked against real supervisord in
test_integration_status.py; here: arguments, faults, settings, and the
promise that nothing of ours reaches supervisord's loop as an exception.
"""
import select
import unittest
import xmlrpc.client

from supervisor import events
from supervisor.socket_manager import SocketManager
from supervisor.datatypes import InetStreamSocketConfig
from supervisor.states import SupervisorStates
from supervisor.tests.base import (DummyFCGIGroupConfig, DummyFCGIProcessGroup,
                                   DummyOptions, DummyPConfig, DummyPGroupConfig,
                                   DummyProcess, DummyProcessGroup,
                                   DummySupervisor)
from supervisor.xmlrpc import Faults as SupervisorFaults
from supervisor.xmlrpc import RPCError

from supervisor_fcgi_ext.lab.harness import free_port
from pluginstate import forget_plugins


def make_supervisord():
    options = DummyOptions()
    supervisord = DummySupervisor(options)
    pconfig = DummyPConfig(options, 'app_00', '/bin/true')
    config = DummyFCGIGroupConfig(options, 'app', pconfigs=[pconfig],
                                  socket_config=InetStreamSocketConfig('127.0.0.1', free_port(),
                                                                       backlog=7))
    group = DummyFCGIProcessGroup(config)
    group.socket_manager = SocketManager(config.socket_config)
    group.processes = {'app_00': DummyProcess(pconfig)}
    supervisord.process_groups['app'] = group
    plain = DummyPGroupConfig(options, 'plain', pconfigs=[])
    supervisord.process_groups['plain'] = DummyProcessGroup(plain)
    return supervisord


class RPCInterfaceTestBase(unittest.TestCase):
    def setUp(self):
        events.clear()

    def tearDown(self):
        forget_plugins()

    def _makeOne(self, supervisord=None, **config):
        from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
        config.setdefault('scoreboard_dir', 'none')
        return make_fcgi_rpcinterface(supervisord or make_supervisord(), **config)

    def _makeOneWithProcess(self):
        """(supervisord, rpc, its pool's process app_00 running as pid 4242)."""
        supervisord = make_supervisord()
        rpc = self._makeOne(supervisord)
        process = supervisord.process_groups['app'].processes['app_00']
        process.group = supervisord.process_groups['app']
        process.pid = 4242
        return supervisord, rpc, process

    def assertRPCError(self, code, callable, *args):
        with self.assertRaises(RPCError) as cm:
            callable(*args)
        self.assertEqual(cm.exception.code, code)
        return cm.exception


class FaultsTests(unittest.TestCase):
    def test_fault_text_names_our_code(self):
        from supervisor_fcgi_ext.supervisord.rpcinterface import Faults, fault
        error = fault(Faults.NOT_FCGI_POOL, 'web is not a pool')
        self.assertEqual(error.text, 'NOT_FCGI_POOL: web is not a pool')


class MethodTests(RPCInterfaceTestBase):
    def test_getAPIVersion(self):
        from supervisor_fcgi_ext import API_VERSION
        self.assertEqual(self._makeOne().getAPIVersion(), API_VERSION)

    def test_getPoolStatus_raises_bad_name_when_pool_unknown(self):
        self.assertRPCError(SupervisorFaults.BAD_NAME,
                            self._makeOne().getPoolStatus, 'nope')

    def test_getPoolStatus_raises_bad_name_for_non_string(self):
        self.assertRPCError(SupervisorFaults.BAD_NAME,
                            self._makeOne().getPoolStatus, ['app'])

    def test_getPoolStatus_raises_not_fcgi_pool_for_plain_group(self):
        from supervisor_fcgi_ext.supervisord.rpcinterface import Faults
        error = self.assertRPCError(Faults.NOT_FCGI_POOL,
                                    self._makeOne().getPoolStatus, 'plain')
        self.assertIn('plain is not an [fcgi-program:x] group', error.text)

    def test_getPoolStatus_of_a_pool_with_closed_socket(self):
        status = self._makeOne().getPoolStatus('app')
        self.assertEqual(status['name'], 'app')
        self.assertFalse(status['socket_open'])
        self.assertEqual(status['total_processes'], 0)
        self.assertEqual(status['processes'][0]['worker_state'], 'stopped')
        xmlrpc.client.dumps((status,), methodresponse=True)  # marshals

    def test_getPoolStatus_with_open_socket(self):
        supervisord = make_supervisord()
        proxy = supervisord.process_groups['app'].socket_manager.get_socket()
        status = self._makeOne(supervisord).getPoolStatus('app')
        self.assertTrue(status['socket_open'])
        self.assertEqual(status['listen_queue'], 0)
        self.assertEqual(status['listen_queue_len'], 7)
        del proxy

    def test_getAllPoolStatus_lists_only_fcgi_pools(self):
        pools = self._makeOne().getAllPoolStatus()
        self.assertEqual([p['name'] for p in pools], ['app'])

    def test_resetStatistics(self):
        rpc = self._makeOne()
        self.assertTrue(rpc.resetStatistics('app'))
        self.assertRPCError(SupervisorFaults.BAD_NAME, rpc.resetStatistics, 'x')

    def test_guard_counters_show_in_status_until_reset(self):
        rpc = self._makeOne()
        self.assertEqual(rpc.recordSlowRequest('app'), 1)
        self.assertEqual(rpc.recordSlowRequest('app'), 2)
        self.assertEqual(rpc.recordTerminatedRequest('app'), 1)
        status = rpc.getPoolStatus('app')
        self.assertEqual((status['slow_requests'], status['terminated_requests']),
                         (2, 1))
        rpc.resetStatistics('app')
        status = rpc.getPoolStatus('app')
        self.assertEqual((status['slow_requests'], status['terminated_requests']),
                         (0, 0))
        self.assertRPCError(SupervisorFaults.BAD_NAME, rpc.recordSlowRequest, 'x')

    def test_recycles_and_guard_kills_are_counted_per_process(self):
        rpc = self._makeOne()
        self.assertEqual(rpc.recordRecycle('app', 'app_00'), 1)
        self.assertEqual(rpc.recordTerminatedRequest('app', 'app_00'), 1)
        status = rpc.getPoolStatus('app')
        self.assertEqual((status['recycles'], status['guard_kills'],
                          status['terminated_requests']), (1, 1, 1))
        self.assertEqual((status['processes'][0]['recycles'],
                          status['processes'][0]['guard_kills']), (1, 1))
        self.assertRPCError(SupervisorFaults.BAD_NAME, rpc.recordRecycle, 'app', 'app_09')
        self.assertRPCError(SupervisorFaults.BAD_NAME, rpc.recordTerminatedRequest,
                            'app', 7)
        self.assertRPCError(SupervisorFaults.INCORRECT_PARAMETERS, rpc.recordRecycle, 'app')
        self.assertEqual(rpc.getPoolStatus('app')['recycles'], 1)    # nothing lost

    def test_starts_and_exits_from_supervisor_events_are_counted(self):
        _, rpc, process = self._makeOneWithProcess()
        for event in (events.ProcessStateStartingEvent(process, 0),
                      events.ProcessStateExitedEvent(process, 20, expected=False),
                      events.ProcessStateStartingEvent(process, 0),
                      events.ProcessStateBackoffEvent(process, 10),
                      events.ProcessStateStartingEvent(process, 0),
                      events.ProcessStateStoppedEvent(process, 40),
                      events.ProcessStateExitedEvent(process, 20, expected=True)):
            events.notify(event)
        status = rpc.getPoolStatus('app')
        self.assertEqual((status['respawns'], status['unexpected_exits'], status['recycles']),
                         (2, 2, 0))
        self.assertEqual(status['processes'][0]['respawns'], 2)

    def test_methods_refuse_while_shutting_down(self):
        supervisord = make_supervisord()
        rpc = self._makeOne(supervisord)
        supervisord.options.mood = SupervisorStates.SHUTDOWN
        self.assertRPCError(SupervisorFaults.SHUTDOWN_STATE, rpc.getAllPoolStatus)

    def test_a_bug_of_ours_is_a_failed_fault_not_an_http_500(self):
        rpc = self._makeOne()

        def broken(group):
            raise KeyError('boom')
        rpc.plugin.status = broken
        error = self.assertRPCError(SupervisorFaults.FAILED, rpc.getPoolStatus, 'app')
        self.assertEqual(error.text, "FAILED: KeyError: 'boom'")
        self.assertIn("fcgi.getPoolStatus failed: KeyError: 'boom'",
                      rpc.supervisord.options.logger.data)

    def test_a_type_error_of_ours_is_failed_with_its_text_and_logged(self):
        # supervisor makes any TypeError a bare INCORRECT_PARAMETERS: none escapes
        rpc = self._makeOne()

        def broken(group):
            return len(5)
        rpc.plugin.status = broken
        error = self.assertRPCError(SupervisorFaults.FAILED, rpc.getPoolStatus, 'app')
        self.assertEqual(error.text, "FAILED: TypeError: object of type 'int' has no len()")
        self.assertIn("fcgi.getPoolStatus failed: TypeError: object of type 'int' "
                      "has no len()", rpc.supervisord.options.logger.data)

    def test_wrong_arguments_are_incorrect_parameters_saying_why(self):
        rpc = self._makeOne()
        error = self.assertRPCError(SupervisorFaults.INCORRECT_PARAMETERS,
                                    rpc.getPoolStatus)
        self.assertEqual(error.text, "INCORRECT_PARAMETERS: fcgi.getPoolStatus: missing "
                         "a required argument: 'name'")
        error = self.assertRPCError(SupervisorFaults.INCORRECT_PARAMETERS,
                                    rpc.rollingRestart, 'app', 1, True, 'extra')
        self.assertIn('fcgi.rollingRestart: too many positional arguments', error.text)
        self.assertEqual(rpc.supervisord.options.logger.data, [])

    def test_text_xml_forbids_is_escaped_in_every_string(self):
        from supervisor_fcgi_ext.supervisord.xmlmarshal import xmlrpc_safe
        status = {'name': 'app', 'warnings': ['slot of app_00: \x01bad\ufffe'],
                  'processes': [{'request_uri': '/a\x01b', 'request_method': 'G\ufffeT'}],
                  'bad\x01key': 1}
        ((loaded,), _) = xmlrpc.client.loads(xmlrpc.client.dumps((xmlrpc_safe(status),)))
        self.assertEqual(loaded, {'name': 'app', 'warnings': ['slot of app_00: %01bad%EF%BF%BE'],
                                  'processes': [{'request_uri': '/a%01b',
                                                 'request_method': 'G%EF%BF%BET'}],
                                  'bad%01key': 1})

    def test_a_pool_status_holding_forbidden_text_marshals(self):
        rpc = self._makeOne()
        real = rpc.plugin.status

        def with_bad_text(group):
            status = real(group)
            status['processes'][0]['request_uri'] = '/\ufffe\x01'
            return status
        rpc.plugin.status = with_bad_text
        dumped = xmlrpc.client.dumps((rpc.getPoolStatus('app'),), methodresponse=True)
        ((loaded,), _) = xmlrpc.client.loads(dumped)
        self.assertEqual(loaded['processes'][0]['request_uri'], '/%EF%BF%BE%01')

    def test_big_numbers_travel_as_doubles(self):
        from supervisor_fcgi_ext.supervisord.xmlmarshal import xmlrpc_safe
        value = xmlrpc_safe({'a': [2 ** 40, 5, True]})
        self.assertEqual(value, {'a': [float(2 ** 40), 5, True]})
        xmlrpc.client.dumps((value,))


class LoadedTwiceTests(RPCInterfaceTestBase):
    def test_two_factories_share_one_plugin_and_subscribe_once(self):
        supervisord = make_supervisord()
        first = self._makeOne(supervisord)
        second = self._makeOne(supervisord)
        self.assertIs(first.plugin, second.plugin)
        callbacks = [cb for _, cb in events.callbacks]
        self.assertEqual(len(callbacks), len(set(callbacks)))
        hooks = [d for d in __import__('supervisor.medusa.asyncore_25', fromlist=['x']).socket_map.values()
                 if d is first.plugin.hook]
        self.assertEqual(len(hooks), 1)

    def test_resubscribes_after_reload_cleared_events(self):
        supervisord = make_supervisord()
        rpc = self._makeOne(supervisord)
        events.clear()  # what supervisord does before re-running factories
        self._makeOne(supervisord)
        self.assertIn((events.ProcessStateEvent, rpc.plugin.on_state),
                      events.callbacks)


class NoExceptionReachesSupervisordTests(RPCInterfaceTestBase):
    """An exception in an event callback or the loop would kill supervisord."""

    def test_event_callbacks_swallow_and_log_failures(self):
        supervisord, rpc, process = self._makeOneWithProcess()

        def explode(*args):
            raise RuntimeError('injected')
        rpc.plugin.monitor = explode
        events.notify(events.ProcessStateExitedEvent(process, 20))
        events.notify(events.ProcessStateStartingEvent(process, 0))
        logged = '\n'.join(supervisord.options.logger.data)
        self.assertIn('injected', logged)

    def test_loop_hook_swallows_and_logs_failures(self):
        supervisord = make_supervisord()
        rpc = self._makeOne(supervisord)

        def explode(*args):
            raise RuntimeError('injected in sampling')
        rpc.plugin.view = explode
        hook = rpc.plugin.hook
        self.assertTrue(hook.readable())          # poll our timer, please
        ready, _, _ = select.select([hook.fd], [], [], 3)   # one tick
        self.assertEqual(ready, [hook.fd])
        hook.handle_read_event()                  # must not raise
        self.assertIn('injected in sampling',
                      '\n'.join(supervisord.options.logger.data))
        self.assertFalse(hook.writable())
