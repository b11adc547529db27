"""The process manager's adapter on supervisor's own test dummies
(poolsize.PoolSizer, poolmanagers.PoolManagers)."""
import socket
import unittest

from supervisor.states import ProcessStates, SupervisorStates
from supervisor.tests.base import (DummyFCGIGroupConfig, DummyFCGIProcessGroup,
                                   DummyOptions, DummyPConfig, DummyProcess,
                                   DummyProcessGroup, DummyPGroupConfig)

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import poolsize
from supervisor_fcgi_ext.supervisord.holds import SocketHolds
from supervisor_fcgi_ext.supervisord.poolmanagers import (RUNTIME_SIZES, PoolManagers,
                                                         SizeOutOfRange)
from supervisor_fcgi_ext.supervisord.procmanager import PmSettings

RUNNING = SupervisorStates.RUNNING
DYNAMIC = PmSettings('dynamic', start_servers=2, min_spare_servers=1,
                     max_spare_servers=2)
ONDEMAND = PmSettings('ondemand', process_idle_timeout=5.0)


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class ClosedSocket:
    """A SocketManager whose socket is not open: no queue to read."""
    def __init__(self):
        self.opened = 0

    def is_prepared(self):
        return False

    def get_socket(self):
        self.opened += 1
        return object()


class ListeningSocket:
    """A SocketManager with a real listening socket the test connects to."""
    def __init__(self, test):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(('127.0.0.1', 0))
        self.socket.listen(16)
        test.addCleanup(self.socket.close)
        self.test = test

    def is_prepared(self):
        return True

    def connect(self, count):
        for _ in range(count):
            client = socket.create_connection(self.socket.getsockname())
            self.test.addCleanup(client.close)

    def accept(self, count):
        for _ in range(count):
            self.test.addCleanup(self.socket.accept()[0].close)


def make_group(numprocs, state=ProcessStates.STOPPED, pid=0):
    options = DummyOptions()
    pconfigs = [DummyPConfig(options, 'app_%02d' % n, '/bin/true')
                for n in range(numprocs)]
    group = DummyFCGIProcessGroup(DummyFCGIGroupConfig(options, 'app',
                                                       pconfigs=pconfigs))
    group.socket_manager = ClosedSocket()
    group.processes = {}
    for n, pconfig in enumerate(pconfigs):
        process = DummyProcess(pconfig, state)
        process.pid = pid and pid + n
        process.group = group
        group.processes[pconfig.name] = process
    return group


class PoolSizerTests(unittest.TestCase):
    def sizer(self, settings, group, clock=None):
        self.clock = clock or Clock()
        self.logger = DummyOptions().logger
        sizer = poolsize.PoolSizer('app', settings, len(group.processes),
                                   self.logger, self.clock)
        sizer.keep_from_autostart(group)
        self.addCleanup(sizer.close)   # no activation left in asyncore's map
        return sizer

    def states(self, group):
        return [group.processes[n].get_state() for n in sorted(group.processes)]

    def test_dynamic_pool_lets_supervisor_autostart_start_servers_only(self):
        group = make_group(4)
        sizer = self.sizer(DYNAMIC, group)
        fresh = [p.laststart for _, p in sorted(group.processes.items())]
        self.assertEqual(fresh, [0, 0, 1000.0, 1000.0])
        self.assertEqual(sizer.held, {'app_02', 'app_03'})
        self.assertEqual(self.states(group), [ProcessStates.STOPPED] * 4)

    def test_static_pool_is_left_alone(self):
        group = make_group(3)
        sizer = self.sizer(PmSettings(), group)
        self.assertEqual([p.laststart for p in group.processes.values()], [0] * 3)
        self.assertTrue(sizer.step(group, None, False, RUNNING))   # quiet
        self.assertFalse(any(p.spawned or p.stop_called
                             for p in group.processes.values()))
        self.assertEqual(sizer.status()['pm_state'], 'static')

    def test_surplus_idle_workers_are_stopped_gracefully_and_held(self):
        group = make_group(4, ProcessStates.RUNNING, pid=100)
        sizer = self.sizer(DYNAMIC, group)
        self.assertFalse(sizer.step(group, None, False, RUNNING))   # not quiet
        stopped = [n for n, p in sorted(group.processes.items()) if p.stop_called]
        self.assertEqual(stopped, ['app_00'])
        self.assertEqual(sizer.held, {'app_00'})
        self.assertEqual((sizer.status()['stops'], sizer.status()['spawns']), (1, 0))

    def test_no_stop_during_a_rolling_restart_or_someone_elses_stop(self):
        group = make_group(4, ProcessStates.RUNNING, pid=100)
        sizer = self.sizer(DYNAMIC, group)
        sizer.step(group, None, True, RUNNING)
        group.processes['app_03'].state = ProcessStates.STOPPING
        self.clock.now += 2
        sizer.step(group, None, False, RUNNING)
        self.assertFalse(any(p.stop_called for p in group.processes.values()))

    def test_missing_spares_start_the_managers_own_processes(self):
        group = make_group(4)
        sizer = self.sizer(DYNAMIC, group)
        for n, name in enumerate(('app_00', 'app_01')):   # autostarted
            group.processes[name].state = ProcessStates.RUNNING
            group.processes[name].pid = 10 + n
            group.processes[name].laststart = 1.0
        # no slots: the two connections accepted make both busy (socket level)
        group.socket_manager = ListeningSocket(self)
        group.socket_manager.connect(3)
        group.socket_manager.accept(2)
        sizer.step(group, None, False, RUNNING)
        self.assertEqual([n for n, p in sorted(group.processes.items()) if p.spawned],
                         ['app_02'])
        self.assertEqual(sizer.held, {'app_03'})
        self.assertEqual(sizer.status()['spawns'], 1)

    def test_user_stopped_pool_is_paused(self):
        group = make_group(2, ProcessStates.STOPPED)
        for process in group.processes.values():
            process.laststart = 5.0   # ran once, stopped by supervisorctl
        sizer = self.sizer(ONDEMAND, group)
        group.socket_manager = ListeningSocket(self)
        group.socket_manager.connect(4)
        sizer.step(group, None, False, RUNNING)
        self.assertFalse(any(p.spawned for p in group.processes.values()))
        self.assertEqual(sizer.status()['pm_state'], 'paused')

    def test_failed_start_backs_off_with_one_log_line(self):
        group = make_group(3)
        sizer = self.sizer(ONDEMAND, group)
        spawns = []

        def fail(process=None):
            spawns.append(1)
            for p in group.processes.values():
                if p.get_state() == ProcessStates.STOPPED and not p.spawned:
                    p.spawned = True
                    p.state = ProcessStates.BACKOFF
                    p.spawnerr = 'no such file'
                    return
        for process in group.processes.values():
            process.spawn = fail
        group.socket_manager = ListeningSocket(self)
        group.socket_manager.connect(1)
        for _ in range(20):
            self.clock.now += 0.5
            for p in group.processes.values():
                if p.get_state() == ProcessStates.BACKOFF:
                    p.state = ProcessStates.FATAL
            sizer.step(group, None, False, RUNNING)
        # 10 s: the first start, one retry after 5 s, then 10 s of quiet
        self.assertEqual(len(spawns), 2)
        warnings = [line for line in self.logger.data if 'could not start' in line]
        self.assertEqual(len(warnings), 1)
        self.assertIn('app_00 could not start (BACKOFF: no such file)', warnings[0])

    def test_classify_reads_the_slot(self):
        process = DummyProcess(DummyPConfig(DummyOptions(), 'app_00', '/bin/true'))
        process.laststart = 10.0
        idle = scoreboard.Slot(pid=1, start_time=10.0, state='idle', request_start=20.0,
                               last_request_duration_us=2500000)
        self.assertEqual(poolsize.classify(process, idle, None, 30.0),
                         ('app_00', 'idle', 22.5))
        busy = scoreboard.Slot(pid=1, start_time=10.0, state='running',
                               request_start=29.0)
        self.assertEqual(poolsize.classify(process, busy, 0.0, 30.0).state, 'busy')
        threaded = scoreboard.Slot(pid=1, start_time=10.0, state='running',
                                   request_start=29.0, active=1, threads=4)
        self.assertEqual(poolsize.classify(process, threaded, 0.0, 30.0),
                         ('app_00', 'idle', 30.0))   # a free thread, not idle long
        full = scoreboard.Slot(pid=1, start_time=10.0, state='running',
                               request_start=29.0, active=4, threads=4)
        self.assertEqual(poolsize.classify(process, full, 0.0, 30.0).state, 'busy')
        # no slot: the socket tells, and a worker just started is starting
        self.assertEqual(poolsize.classify(process, None, 25.0, 30.0),
                         ('app_00', 'idle', 25.0))
        self.assertEqual(poolsize.classify(process, None, None, 10.5).state, 'starting')
        process.state = ProcessStates.STOPPED
        self.assertIsNone(poolsize.classify(process, None, None, 30.0))


class PoolManagersTests(unittest.TestCase):
    def tearDown(self):
        RUNTIME_SIZES.clear()   # what setPoolSize set outlives a plugin

    def managers(self):
        self.logger = DummyOptions().logger
        self.clock = Clock()
        self.holds = SocketHolds(self.logger)
        return PoolManagers(self.logger, self.holds, self.clock)

    def test_configure_refuses_what_does_not_fit_with_one_line(self):
        options = DummyOptions()
        plain = DummyProcessGroup(DummyPGroupConfig(options, 'web'))
        plain.processes = {}
        groups = {'App': make_group(3), 'web': plain}
        cases = [({'nope': ONDEMAND}, "nope.pm: there is no group 'nope'"),
                 ({'web': ONDEMAND}, 'web.pm: web is not an [fcgi-program:x] group'),
                 ({'app': PmSettings('dynamic', 4, 1, 4)},
                  "app.pm.start_servers (4) is more than the pool's numprocs (3)")]
        for settings, message in cases:
            with self.assertRaises(ValueError) as raised:
                self.managers().configure(settings, 30.0, groups)
            self.assertIn(message, str(raised.exception))
        managers = self.managers()
        managers.configure({'app': ONDEMAND}, 30.0, groups)   # case-insensitive
        self.assertEqual(managers.settings_of('App').pm, 'ondemand')

    def test_ondemand_pool_holds_its_socket_from_the_start(self):
        managers = self.managers()
        group = make_group(2)
        managers.configure({'app': ONDEMAND}, 30.0, {'app': group})
        managers.prepare(group)
        self.assertTrue(self.holds.is_holding('app'))
        self.assertEqual(group.socket_manager.opened, 1)

    def test_set_size_states_the_range(self):
        managers = self.managers()
        group = make_group(3, ProcessStates.RUNNING, pid=10)
        for bad in (4, -1, True, '2'):
            with self.assertRaises(SizeOutOfRange) as raised:
                managers.set_size(group, bad)
            self.assertIn('app: n must be a whole number from 0 to 3 (its numprocs)',
                          str(raised.exception))
        status = managers.set_size(group, 1)
        self.assertEqual((status['pm'], status['target'], status['floor'],
                          status['ceiling']), ('static', 1, 1, 1))
        managers.step(group, None, False, RUNNING)
        self.assertEqual(sorted(n for n, p in group.processes.items() if p.stop_called),
                         ['app_00', 'app_01'])

    def test_hold_limit_lets_go_once_and_logs_once(self):
        managers = self.managers()
        group = make_group(1, ProcessStates.BACKOFF)
        managers.configure({}, 2.0, {'app': group})
        self.holds.hold(group, open_socket=True)
        managers.step(group, None, False, RUNNING)
        self.clock.now += 1.0
        managers.step(group, None, False, RUNNING)
        self.assertTrue(self.holds.is_holding('app'))
        self.clock.now += 1.5
        managers.step(group, None, False, RUNNING)
        self.assertFalse(self.holds.is_holding('app'))
        self.holds.hold(group, open_socket=True)   # the next spawn takes it again
        managers.step(group, None, False, RUNNING)
        self.assertFalse(self.holds.is_holding('app'))
        lines = [l for l in self.logger.data if 'hold_timeout' in l]
        self.assertEqual(len(lines), 1)
        self.assertIn('app has had no running worker for 2s (hold_timeout)', lines[0])

    def test_hold_timeout_zero_holds_forever(self):
        managers = self.managers()
        group = make_group(1, ProcessStates.FATAL)
        managers.configure({}, 0.0, {'app': group})
        self.holds.hold(group, open_socket=True)
        for _ in range(3):
            self.clock.now += 1000
            managers.step(group, None, False, RUNNING)
        self.assertTrue(self.holds.is_holding('app'))


if __name__ == '__main__':
    unittest.main()


class SizeAcrossReloadTests(unittest.TestCase):
    def test_a_new_plugin_keeps_the_size_and_autostarts_only_it(self):
        logger = DummyOptions().logger
        first = PoolManagers(logger, SocketHolds(logger))
        first.set_size(make_group(4, ProcessStates.RUNNING, pid=10), 2)
        # a reload: new supervisord, plugin, groups; nothing started yet
        second = PoolManagers(logger, SocketHolds(logger))
        group = make_group(4)
        second.prepare(group)
        self.assertEqual(second.status(group)['target'], 2)
        self.assertEqual([p.laststart == 0 for _, p in sorted(group.processes.items())],
                         [True, True, False, False])

    def tearDown(self):
        RUNTIME_SIZES.clear()
