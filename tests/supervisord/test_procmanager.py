"""The process manager's decisions on plain figures (procmanager)."""
import unittest

from supervisor_fcgi_ext.supervisord import procmanager as pm
from supervisor_fcgi_ext.supervisord.procmanager import Figures, PmSettings, PmState, Worker
from supervisor_fcgi_ext.supervisord.settings import parse_settings

DYNAMIC = PmSettings('dynamic', start_servers=2, min_spare_servers=4,
                     max_spare_servers=6, max_spawn_rate=32)
ONDEMAND = PmSettings('ondemand', process_idle_timeout=10.0)


def workers(*states, since=0.0):
    return [Worker('app_%02d' % n, state, since + n) for n, state in enumerate(states)]


def state(ceiling=12, target=None):
    return PmState(ceiling=ceiling, target=ceiling if target is None else target)


class ParseTests(unittest.TestCase):
    def test_pm_key_splits_pool_and_setting(self):
        self.assertEqual(pm.pm_key('app.pm'), ('app', 'pm'))
        self.assertEqual(pm.pm_key('my.app.pm.max_spare_servers'),
                         ('my.app', 'pm.max_spare_servers'))
        self.assertEqual(pm.pm_key('app.pm.max_spare'), ('app', 'pm.max_spare'))
        self.assertIsNone(pm.pm_key('sample_interval'))
        self.assertIsNone(pm.pm_key('.pm'))

    def test_dynamic_start_servers_defaults_to_php_fpm_halfway(self):
        settings = pm.parse_pool_settings('app', {
            'pm': 'dynamic', 'pm.min_spare_servers': '2',
            'pm.max_spare_servers': '7'})
        self.assertEqual((settings.start_servers, settings.max_spawn_rate,
                          settings.process_idle_timeout), (4, 32, 10.0))

    def test_idle_timeout_takes_php_fpm_units(self):
        for raw, seconds in (('10', 10.0), ('10s', 10.0), ('500ms', 0.5), ('2m', 120.0)):
            settings = pm.parse_pool_settings('app', {
                'pm': 'ondemand', 'pm.process_idle_timeout': raw})
            self.assertEqual(settings.process_idle_timeout, seconds)

    def test_bad_settings_name_the_key(self):
        cases = [
            ({'pm': 'lazy'}, 'app.pm must be one of static, dynamic, ondemand'),
            ({'pm': 'dynamic', 'pm.max_spare_servers': '3'},
             'app.pm.min_spare_servers is required'),
            ({'pm': 'dynamic', 'pm.min_spare_servers': '4',
              'pm.max_spare_servers': '3'}, 'app.pm.min_spare_servers (4)'),
            ({'pm': 'dynamic', 'pm.min_spare_servers': '1',
              'pm.max_spare_servers': '3', 'pm.start_servers': '5'},
             'app.pm.start_servers (5) must be between'),
            ({'pm': 'ondemand', 'pm.start_servers': '1'},
             'app.pm.start_servers only applies to pm = dynamic'),
            ({'pm': 'ondemand', 'pm.process_idle_timeout': '0'},
             'app.pm.process_idle_timeout must be seconds above 0'),
            ({'pm': 'ondemand', 'pm.max_spawn_rate': 'x'},
             'app.pm.max_spawn_rate must be a whole number >= 1'),
            ({'pm': 'ondemand', 'pm.spare': '1'}, 'app.pm.spare: unknown setting'),
        ]
        for options, message in cases:
            with self.assertRaises(ValueError) as raised:
                pm.parse_pool_settings('app', options)
            self.assertIn(message, str(raised.exception))
            self.assertIn('[rpcinterface:fcgi]', str(raised.exception))
            self.assertNotIn('\n', str(raised.exception))

    def test_start_servers_above_numprocs_is_refused(self):
        settings = pm.parse_pool_settings('app', {
            'pm': 'dynamic', 'pm.min_spare_servers': '1',
            'pm.max_spare_servers': '8', 'pm.start_servers': '8'})
        pm.check_pool_settings('app', settings, 8)
        with self.assertRaises(ValueError) as raised:
            pm.check_pool_settings('app', settings, 6)
        self.assertIn("app.pm.start_servers (8) is more than the pool's numprocs (6)",
                      str(raised.exception))

    def test_parse_pm_options_groups_keys_by_pool(self):
        parsed = pm.parse_pm_options({'a.pm': 'ondemand', 'b.pm': 'dynamic',
                                      'b.pm.min_spare_servers': '1',
                                      'b.pm.max_spare_servers': '2'})
        self.assertEqual(sorted(parsed), ['a', 'b'])
        self.assertEqual(parsed['b'].start_servers, 1)

    def test_hold_timeout(self):
        self.assertEqual(pm.parse_hold_timeout('0'), 0.0)
        self.assertEqual(pm.parse_hold_timeout('2.5'), 2.5)
        for raw in ('-1', 'soon', '1e9'):
            with self.assertRaises(ValueError) as raised:
                pm.parse_hold_timeout(raw)
            self.assertIn('hold_timeout = %r' % raw, str(raised.exception))


class StaticTests(unittest.TestCase):
    def test_untouched_static_pool_does_nothing(self):
        s = state(ceiling=3)
        figures = Figures(workers('busy', 'idle', 'idle'), 0, 5)
        self.assertEqual(pm.decide(PmSettings(), s, figures, 100.0), (0, []))

    def test_scale_down_stops_the_idlest_first(self):
        s = state(ceiling=6, target=2)
        live = workers('busy', 'idle', 'starting', 'idle', 'busy', 'idle')
        live[5] = Worker('app_05', 'idle', -50.0)   # idle the longest
        decision = pm.decide(PmSettings(), s, Figures(live, 0, 0), 100.0)
        self.assertEqual(decision.start, 0)
        self.assertEqual(decision.stop, ['app_05', 'app_01', 'app_03', 'app_02'])

    def test_scale_up_starts_what_is_missing_within_what_can_start(self):
        s = state(ceiling=6)
        self.assertEqual(pm.decide(PmSettings(), s, Figures(workers('idle'), 5, 0), 0),
                         (5, []))
        self.assertEqual(pm.decide(PmSettings(), s, Figures(workers('idle'), 2, 0), 0),
                         (2, []))

    def test_stopping_workers_do_not_count(self):
        s = state(ceiling=2)
        figures = Figures(workers('stopping', 'idle'), 1, 0)
        self.assertEqual(pm.decide(PmSettings(), s, figures, 0), (1, []))

    def test_no_stop_while_something_else_replaces_workers(self):
        s = state(ceiling=4, target=1)
        figures = Figures(workers('idle', 'idle', 'idle'), 0, 0)
        self.assertEqual(pm.decide(PmSettings(), s, figures, 0, may_stop=False), (0, []))


def burst_starts(settings, queue, seconds=5):
    """Starts decided second by second for a pool of 2 busy workers whose
    new workers are busy at once, and the pool's PmState after."""
    s = state(ceiling=12)
    live = workers('busy', 'busy')
    starts = []
    for second in range(seconds):
        decision = pm.decide(settings, s, Figures(live, 12 - len(live), queue), second)
        starts.append(decision.start)
        live = live + [Worker('new%d%d' % (second, n), 'busy', 0)
                       for n in range(decision.start)]
    return starts, s


class DynamicTests(unittest.TestCase):
    def test_spawn_rate_doubles_while_spares_are_missing(self):
        starts, s = burst_starts(DYNAMIC, 9)
        # min(rate, min_spare - idle, ceiling - running): 1, 2, 4, then 3 to 12
        self.assertEqual(starts, [1, 2, 4, 3, 0])
        self.assertEqual(s.max_children_reached, 1)

    def test_waiting_connections_grow_the_pool_beyond_min_spare(self):
        settings = PmSettings('dynamic', 2, 2, 4, 32)
        starts, s = burst_starts(settings, 50)
        self.assertEqual(starts, [1, 2, 4, 3, 0])
        self.assertEqual(s.max_children_reached, 1)
        # PHP-FPM's rule alone, with nothing waiting: min_spare - idle
        s = state(ceiling=12)
        s.idle_spawn_rate = 8
        self.assertEqual(pm.decide(settings, s, Figures(workers('busy', 'busy'), 10, 0),
                                   0).start, 2)

    def test_waiting_connections_with_an_idle_worker_start_nothing(self):
        s = state(ceiling=12)
        figures = Figures(workers('busy', 'idle', 'idle', 'idle', 'idle'), 7, 3)
        self.assertEqual(pm.decide(DYNAMIC, s, figures, 0), (0, []))

    def test_max_children_reached_counts_episodes_not_seconds(self):
        s = state(ceiling=2)
        full = Figures(workers('busy', 'busy'), 0, 3)
        for second in range(5):
            pm.decide(DYNAMIC, s, full, second)
        self.assertEqual(s.max_children_reached, 1)
        s.ceiling = 3
        self.assertEqual(pm.decide(DYNAMIC, s, Figures(workers('busy', 'busy'), 1, 3),
                                   10).start, 1)
        pm.decide(DYNAMIC, s, Figures(workers('busy', 'busy', 'busy'), 0, 3), 11)
        self.assertEqual(s.max_children_reached, 2)

    def test_nothing_startable_below_the_ceiling_is_not_max_children(self):
        # backing off, paused, or the other processes stopped by a user
        for settings, queue in ((DYNAMIC, 0), (ONDEMAND, 4)):
            s = state(ceiling=12)
            figures = Figures(workers('busy', 'busy'), 0, queue)
            for second in range(3):
                self.assertEqual(pm.decide(settings, s, figures, second), (0, []))
            self.assertEqual(s.max_children_reached, 0)

    def test_surplus_idle_is_stopped_one_per_second(self):
        s = state(ceiling=12)
        live = workers(*['idle'] * 9)
        first = pm.decide(DYNAMIC, s, Figures(live, 3, 0), 100.0)
        self.assertEqual(first, (0, ['app_00']))
        self.assertEqual(pm.decide(DYNAMIC, s, Figures(live[1:], 4, 0), 100.5), (0, []))
        self.assertEqual(pm.decide(DYNAMIC, s, Figures(live[1:], 4, 0), 101.0),
                         (0, ['app_01']))

    def test_starting_workers_count_as_spares(self):
        s = state(ceiling=12)
        s.idle_spawn_rate = 4
        figures = Figures(workers('busy', 'idle', 'starting', 'starting', 'starting'), 7, 0)
        self.assertEqual(pm.decide(DYNAMIC, s, figures, 0), (0, []))
        self.assertEqual(s.idle_spawn_rate, 4)   # kept while they start

    def test_within_spares_nothing_happens_and_rate_resets(self):
        s = state(ceiling=12)
        s.idle_spawn_rate = 8
        figures = Figures(workers(*['idle'] * 5), 7, 0)
        self.assertEqual(pm.decide(DYNAMIC, s, figures, 0), (0, []))
        self.assertEqual(s.idle_spawn_rate, 1)

    def test_lowered_ceiling_stops_the_surplus_at_once(self):
        s = state(ceiling=3)
        figures = Figures(workers('busy', 'idle', 'idle', 'idle', 'busy'), 0, 0)
        self.assertEqual(pm.decide(DYNAMIC, s, figures, 0), (0, ['app_01', 'app_02']))

    def test_floor_and_ceiling(self):
        self.assertEqual(pm.floor_ceiling(DYNAMIC, state(12)), (4, 12))
        self.assertEqual(pm.floor_ceiling(DYNAMIC, state(2)), (2, 2))
        self.assertEqual(pm.floor_ceiling(ONDEMAND, state(6)), (0, 6))
        self.assertEqual(pm.floor_ceiling(PmSettings(), state(6, 3)), (3, 3))


class OndemandTests(unittest.TestCase):
    def test_waiting_connections_start_workers_at_once(self):
        s = state(ceiling=6)
        self.assertEqual(pm.decide(ONDEMAND, s, Figures([], 6, 1), 0), (1, []))
        self.assertEqual(pm.decide(ONDEMAND, s, Figures(workers('busy'), 5, 3), 0.1),
                         (3, []))
        # a worker starting will take one of them
        self.assertEqual(pm.decide(ONDEMAND, s, Figures(workers('busy', 'starting'),
                                                        4, 3), 0.2), (2, []))

    def test_at_the_ceiling_it_counts_once(self):
        s = state(ceiling=2)
        for t in range(4):
            self.assertEqual(pm.decide(ONDEMAND, s, Figures(workers('busy', 'busy'), 0, 5),
                                       t), (0, []))
        self.assertEqual(s.max_children_reached, 1)

    def test_idle_workers_go_after_the_idle_timeout_one_a_second(self):
        s = state(ceiling=6)
        live = [Worker('a', 'idle', 100.0), Worker('b', 'idle', 95.0),
                Worker('c', 'busy', 90.0)]
        self.assertEqual(pm.decide(ONDEMAND, s, Figures(live, 3, 0), 104.0), (0, []))
        self.assertEqual(pm.decide(ONDEMAND, s, Figures(live, 3, 0), 106.0), (0, ['b']))
        self.assertEqual(pm.decide(ONDEMAND, s, Figures(live[:1] + live[2:], 4, 0),
                                   106.5), (0, []))
        self.assertEqual(pm.decide(ONDEMAND, s, Figures(live[:1] + live[2:], 4, 0),
                                   111.0), (0, ['a']))


class SettingsKeysTests(unittest.TestCase):
    """The pm keys as [rpcinterface:fcgi] hands them to settings.parse_settings."""

    def test_pm_keys_and_hold_timeout_reach_the_settings(self):
        settings = parse_settings({'app.pm': 'ondemand', 'hold_timeout': '5',
                                   'app.pm.process_idle_timeout': '3s'})
        self.assertEqual(settings['hold_timeout'], 5.0)
        self.assertEqual(settings['pm'], {'app': PmSettings('ondemand',
                                                            process_idle_timeout=3.0)})
        defaults = parse_settings({})
        self.assertEqual((defaults['pm'], defaults['hold_timeout']),
                         ({}, pm.DEFAULT_HOLD_TIMEOUT))


if __name__ == '__main__':
    unittest.main()
