"""Unit tests: socket holds, the rolling-restart state machine, its RPC and
ctl faces.  Configs are supervisor's own, parsed from ini text; processes
are fakes whose states the tests move; sockets are real (SocketManager on a
temp unix socket), so reference counting is supervisor's.  Real supervisord,
nginx and workers: test_integration_deploy.py.
"""
import os
import shutil
import tempfile
import time
import unittest
import xmlrpc.client

from supervisor import events
from supervisor.http import NOT_DONE_YET
from supervisor.options import NotFound, ServerOptions, UnhosedConfigParser
from supervisor.socket_manager import SocketManager
from supervisor.states import ProcessStates, SupervisorStates
from supervisor.tests.base import DummyLogger
from supervisor.xmlrpc import Faults as SupervisorFaults
from supervisor.xmlrpc import RPCError

from supervisor_fcgi_ext.supervisord.rolling import (ACCEPT_TIMEOUT, NotRollable,
                                                     RollingRestart, target_config)
from pluginstate import forget_plugins

CONFIG = """
[fcgi-program:app]
socket = unix://%(dir)s/app.sock
command = %(command)s
numprocs = %(numprocs)d
process_name = %%(program_name)s_%%(process_num)02d
stdout_logfile = NONE
stderr_logfile = NONE
[program:plain]
command = /bin/cat
"""


def parse(directory, command='/bin/cat', numprocs=3, text=CONFIG):
    """supervisor's own group configs for the given ini text."""
    parser = UnhosedConfigParser()
    parser.read_string(text % {'dir': directory, 'command': command,
                               'numprocs': numprocs})
    return ServerOptions().process_groups_from_parser(parser)


class FakeProcess:
    """A process whose state the test moves; records stop/spawn."""
    spawnerr = None
    backoff = 0

    def __init__(self, config, group):
        self.config = config
        self.group = group
        self.state = ProcessStates.RUNNING
        self.pid = FakeProcess.next_pid = getattr(FakeProcess, 'next_pid', 100) + 1
        self.laststart = 0
        self.calls = []

    def get_state(self):
        return self.state

    def stop(self):
        self.calls.append('stop')
        self.state = ProcessStates.STOPPING

    def exit(self):
        self.state, self.pid = ProcessStates.STOPPED, 0

    def spawn(self):
        self.calls.append(('spawn', self.config.command))
        self.state = ProcessStates.STARTING
        self.pid = FakeProcess.next_pid = FakeProcess.next_pid + 1
        self.laststart = time.time()


class FakeGroup:
    def __init__(self, config):
        self.config = config
        self.socket_manager = SocketManager(config.socket_config)
        self.processes = {c.name: FakeProcess(c, self)
                          for c in config.process_configs}
        # what the running workers hold
        self.worker_refs = [self.socket_manager.get_socket()]


class FakeOptions:
    def __init__(self, configs):
        self.process_group_configs = configs
        self.logger = DummyLogger()
        self.mood = SupervisorStates.RUNNING


class FakeSupervisord:
    def __init__(self, configs):
        self.options = FakeOptions(configs)
        self.process_groups = {'app': FakeGroup(configs[0])}


class TempDirTestCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='sfe-rolling-')
        self.addCleanup(shutil.rmtree, self.dir, True)


class TargetConfigTests(TempDirTestCase):
    def _group(self, **kw):
        return FakeSupervisord(parse(self.dir, **kw)).process_groups['app']

    def test_without_reread_the_current_config(self):
        group = self._group()
        options = FakeOptions(parse(self.dir))   # reread, nothing changed
        self.assertEqual(target_config(options, group), (group.config, ''))

    def test_changed_command_rolls_and_says_what_changed(self):
        group = self._group()
        new = parse(self.dir, command='/bin/sleep 1000')
        config, changed = target_config(FakeOptions(new), group)
        self.assertIs(config, new[0])
        self.assertEqual(changed, 'command')

    def test_socket_or_numprocs_change_needs_update(self):
        group = self._group()
        moved = parse(self.dir + '/sub')
        with self.assertRaisesRegex(NotRollable, 'socket changed .* update'):
            target_config(FakeOptions(moved), group)
        with self.assertRaisesRegex(NotRollable, r'numprocs .* \(3 -> 4'):
            target_config(FakeOptions(parse(self.dir, numprocs=4)), group)

    def test_a_pool_gone_from_the_config_restarts_as_it_is(self):
        group = self._group()
        self.assertEqual(target_config(FakeOptions([]), group), (group.config, ''))

    def test_a_pool_turned_into_a_plain_program_needs_update(self):
        group = self._group()
        plain = parse(self.dir, text=CONFIG.replace('fcgi-program:app', 'x:y')
                      .replace('[program:plain]', '[program:app]'))
        with self.assertRaisesRegex(NotRollable, 'no longer an'):
            target_config(FakeOptions(plain), group)


class RollingRestartTests(TempDirTestCase):
    def _start(self, batch=1, slot_states=None, **kw):
        self.supervisord = FakeSupervisord(parse(self.dir))
        if kw:   # a reread config
            self.supervisord.options.process_group_configs = parse(self.dir, **kw)
        self.group = self.supervisord.process_groups['app']
        self.procs = [self.group.processes[n] for n in sorted(self.group.processes)]
        restart = RollingRestart(self.supervisord, self.group, batch, None,
                                 self.supervisord.options.logger)
        restart._slot_state = lambda pid: (slot_states or {}).get(pid, '')
        restart.begin()
        return restart

    def _settle(self, restart, proc):
        """The stopped process exits; its replacement reaches RUNNING."""
        proc.exit()
        restart.step()
        proc.state = ProcessStates.RUNNING
        restart.step()

    def test_one_at_a_time_and_the_socket_never_closes(self):
        restart = self._start()
        self.assertEqual([p.calls for p in self.procs], [['stop'], [], []])
        self.group.worker_refs = []     # every worker gone: only ours is left
        restart.step()                  # still stopping: nothing more happens
        self.assertEqual([p.calls for p in self.procs], [['stop'], [], []])
        for proc in self.procs:
            self.assertTrue(self.group.socket_manager.is_prepared())
            self.assertEqual(proc.calls, ['stop'])
            proc.exit()
            restart.step()
            self.assertEqual(proc.calls, ['stop', ('spawn', '/bin/cat')])
            self.assertEqual(restart.state, 'running')
            proc.state = ProcessStates.RUNNING
            restart.step()
        self.assertEqual(restart.state, 'done')
        self.assertEqual(restart.replaced, 3)
        self.assertEqual(restart.min_accepting, 2)
        self.assertFalse(self.group.socket_manager.is_prepared())  # ref let go
        self.assertIn('done: 3 workers replaced', restart.messages[-1])

    def test_batch_of_two(self):
        restart = self._start(batch=2)
        self.assertEqual([p.calls for p in self.procs], [['stop'], ['stop'], []])
        self._settle(restart, self.procs[0])
        self.assertEqual(self.procs[2].calls, [])   # batch 1 not complete yet
        self._settle(restart, self.procs[1])
        self.assertEqual(self.procs[2].calls, ['stop'])
        self._settle(restart, self.procs[2])
        self.assertEqual((restart.state, restart.min_accepting), ('done', 1))

    def _first_replacement_running_but_starting(self, states):
        """The first worker replaced: RUNNING, its slot still 'starting'."""
        restart = self._start(slot_states=states)
        self.procs[0].exit()
        restart.step()
        self.procs[0].state = ProcessStates.RUNNING
        states[self.procs[0].pid] = 'starting'
        return restart

    def test_waits_for_a_cooperating_worker_to_leave_starting(self):
        states = {}
        restart = self._first_replacement_running_but_starting(states)
        restart.step()
        self.assertEqual(self.procs[1].calls, [])
        states[self.procs[0].pid] = 'idle'
        restart.step()
        self.assertEqual(self.procs[1].calls, ['stop'])
        self.assertIn('(idle)', restart.messages[-2])

    def test_a_worker_stuck_in_starting_fails_the_restart(self):
        restart = self._first_replacement_running_but_starting({})
        self.procs[0].laststart -= ACCEPT_TIMEOUT + 1
        restart.step()
        self.assertEqual(restart.state, 'failed')
        self.assertIn('app:app_00 RUNNING but still starting', restart.error)

    def test_a_deploy_swaps_configs_and_leaves_update_nothing_to_do(self):
        restart = self._start(command='/bin/sleep 1000')
        new_config = self.supervisord.options.process_group_configs[0]
        self.assertIn('reread config (changed: command)', restart.messages[0])
        for proc in self.procs:
            self._settle(restart, proc)
        self.assertEqual([p.calls[1] for p in self.procs],
                         [('spawn', '/bin/sleep 1000')] * 3)
        self.assertIs(self.group.config, new_config)

    def test_a_replacement_that_fails_stops_the_rollout_naming_it(self):
        restart = self._start(command='/bin/sleep 1000')
        old_config = self.group.config
        self._settle(restart, self.procs[0])
        self.procs[1].exit()
        restart.step()
        self.procs[1].state = ProcessStates.BACKOFF
        self.procs[1].spawnerr = 'Exited too quickly'
        restart.step()
        self.assertEqual(restart.state, 'failed')
        self.assertIn('app:app_01 failed to start (BACKOFF: Exited too quickly)',
                      restart.error)
        self.assertEqual(self.procs[2].calls, [])     # the old one keeps serving
        self.assertIs(self.group.config, old_config)  # update still sees a change
        restart.step()
        self.assertEqual(self.procs[2].calls, [])

    def test_a_process_stopped_before_is_just_started(self):
        restart = self._start()
        self.procs[1].state, self.procs[1].pid = ProcessStates.FATAL, 0
        self._settle(restart, self.procs[0])
        self.assertEqual(self.procs[1].calls, [('spawn', '/bin/cat')])

    def test_a_sized_pool_replaces_only_its_running_workers(self):
        self.supervisord = FakeSupervisord(parse(self.dir))
        self.group = self.supervisord.process_groups['app']
        procs = [self.group.processes[n] for n in sorted(self.group.processes)]
        procs[1].state, procs[1].pid = ProcessStates.STOPPED, 0   # the manager's
        restart = RollingRestart(self.supervisord, self.group, 1, None,
                                 self.supervisord.options.logger, only_running=True)
        restart._slot_state = lambda pid: ''
        restart.begin()
        for proc in (procs[0], procs[2]):
            self._settle(restart, proc)
        self.assertEqual(restart.state, 'done')
        self.assertEqual(procs[1].calls, [])         # left stopped
        self.assertEqual((restart.status()['total'], restart.replaced), (2, 2))

    def test_pool_replaced_during_the_restart_fails_it(self):
        restart = self._start()
        self.supervisord.process_groups['app'] = object()
        restart.step()
        self.assertEqual(restart.state, 'failed')
        self.assertIn('removed or replaced', restart.error)

    def test_a_bug_fails_the_restart_and_never_raises(self):
        restart = self._start()
        self.procs[0].get_state = None   # TypeError when called
        restart.step()
        self.assertEqual(restart.state, 'failed')
        self.assertIn('internal error: TypeError', restart.error)

    def test_a_command_that_cannot_run_is_refused_before_stopping_anything(self):
        with self.assertRaises(NotFound):
            self._start(command='/nonexistent/worker')
        self.assertEqual([p.calls for p in self.procs], [[], [], []])


class RPCTests(TempDirTestCase):
    def setUp(self):
        super().setUp()
        events.clear()
        self.supervisord = FakeSupervisord(parse(self.dir))
        from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
        self.rpc = make_fcgi_rpcinterface(self.supervisord, scoreboard_dir='none')
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        forget_plugins()

    def assertRPCError(self, code, fn, *args):
        with self.assertRaises(RPCError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code, code)
        return cm.exception

    def test_faults(self):
        from supervisor_fcgi_ext.supervisord.rpcinterface import Faults
        self.assertRPCError(SupervisorFaults.BAD_NAME, self.rpc.rollingRestart, 'x')
        self.assertRPCError(SupervisorFaults.BAD_NAME, self.rpc.getRestartStatus, 'x')
        for batch in (0, 'two', True):
            self.assertRPCError(SupervisorFaults.INCORRECT_PARAMETERS,
                                self.rpc.rollingRestart, 'app', batch)
        self.assertEqual(self.rpc.getRestartStatus('app')['state'], 'idle')
        self.rpc.rollingRestart('app', 1, False)
        error = self.assertRPCError(Faults.ALREADY_RESTARTING,
                                    self.rpc.rollingRestart, 'app')
        self.assertTrue(error.text.startswith('ALREADY_RESTARTING: '))
        self.supervisord.options.process_group_configs = parse(self.dir, numprocs=1)
        self.rpc.plugin.restarts['app'].abort('test')
        self.assertRPCError(Faults.NOT_ROLLABLE, self.rpc.rollingRestart, 'app')
        self.supervisord.options.process_group_configs = parse(
            self.dir, command='/nonexistent/worker')
        self.assertRPCError(SupervisorFaults.NO_FILE, self.rpc.rollingRestart, 'app')

    def test_deferred_call_answers_when_the_restart_ends(self):
        from supervisor_fcgi_ext.supervisord.rpcinterface import Faults
        onwait = self.rpc.rollingRestart('app')
        self.assertIs(onwait(), NOT_DONE_YET)
        stepper = self.rpc.plugin.stepper
        self.assertFalse(stepper.readable())     # steps, never asks for a poll
        group = self.supervisord.process_groups['app']
        for name in sorted(group.processes):
            proc = group.processes[name]
            proc.exit()
            stepper.readable()
            proc.state = ProcessStates.RUNNING
            stepper.readable()
        status = onwait()
        self.assertEqual((status['state'], status['replaced']), ('done', 3))
        xmlrpc.client.dumps((status,), methodresponse=True)
        self.assertIsNone(self.rpc.plugin.stepper)   # gone with the last restart
        onwait = self.rpc.rollingRestart('app')
        self.supervisord.options.mood = SupervisorStates.RESTARTING
        events.notify(events.SupervisorStoppingEvent())
        self.assertRPCError(Faults.RESTART_FAILED, onwait)

    def test_removed_pool_releases_its_socket_and_file(self):
        group = self.supervisord.process_groups['app']
        proc = group.processes['app_00']
        events.notify(events.ProcessStateStartingEvent(proc, ProcessStates.STOPPED))
        self.assertTrue(self.rpc.plugin.holds.is_holding('app'))
        group.worker_refs = []
        for proc in group.processes.values():
            proc.exit()
        self.assertTrue(self.rpc.getPoolStatus('app')['socket_held'])
        del self.supervisord.process_groups['app']
        events.notify(events.ProcessGroupRemovedEvent('app'))
        self.assertFalse(group.socket_manager.is_prepared())
        self.assertFalse(os.path.exists(os.path.join(self.dir, 'app.sock')))

    def test_hold_sockets_false_holds_nothing(self):
        self._cleanup()
        from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
        rpc = make_fcgi_rpcinterface(self.supervisord, scoreboard_dir='none',
                                     hold_sockets='false')
        proc = self.supervisord.process_groups['app'].processes['app_00']
        events.notify(events.ProcessStateStartingEvent(proc, ProcessStates.STOPPED))
        self.assertFalse(rpc.plugin.holds.is_holding('app'))
        with self.assertRaisesRegex(ValueError, r"hold_sockets = 'maybe' is refused "
                                    r"\(allowed: true or false\)"):
            make_fcgi_rpcinterface(self.supervisord, hold_sockets='maybe')
