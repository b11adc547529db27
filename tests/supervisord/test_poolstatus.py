"""poolstatus: the status dicts from plain facts and memory, no I/O."""
import collections
import unittest
import xmlrpc.client

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.common.scoreboard import ScoreboardError, NoSlot, Slot
from supervisor_fcgi_ext.supervisord import poolstatus, readings
from supervisor_fcgi_ext.supervisord.pools import PoolView, ProcessView
from supervisor_fcgi_ext.supervisord.readings import Facts, UNKNOWN
from supervisor_fcgi_ext.supervisord.sockstats import ListenerStats


def view(*pids, sock=object()):
    return PoolView('app', 'tcp://127.0.0.1:9000', 16, sock,
                    [ProcessView('app_%02d' % i, pid, 'RUNNING' if pid else 'STOPPED', 5)
                     for i, pid in enumerate(pids)], False)


def facts(slots=None, held=None, frozen=(), warnings=(), listener=(2, 16, 0)):
    return Facts(ListenerStats(*listener), dict(slots or {}), dict(held or {}), {},
                 frozenset(frozen), list(warnings), [], {})


def memory(**fields):
    base = dict(start_time=100.0, max_listen_queue=3, max_active_processes=1,
                retired={'exact': [0, 0], 'sampled': [0, 0]}, baselines={},
                sampled_counts=collections.Counter(),
                guard_counts=collections.Counter())
    base.update(fields)
    return poolstatus.Memory(**base)


def slot(pid, state='idle', requests=0, **fields):
    return Slot(pid=pid, start_time=1.0, state=state, requests=requests,
                accepted_conn=requests, **fields)


class ProcessStatusTests(unittest.TestCase):

    def one(self, proc_pid=7, **kw):
        status = poolstatus.pool_status(view(proc_pid), facts(**kw), memory(), 110.0)
        return status, status['processes'][0]

    def test_a_slot_gives_exact_figures(self):
        pool, proc = self.one(slots={7: slot(7, 'running', 4, request_uri='/a',
                                              connections=1)})
        self.assertEqual((proc['worker_state'], proc['requests'], proc['connections'],
                          proc['requests_source']), ('running', 4, 1, 'exact'))
        self.assertEqual((pool['active_processes'], pool['idle_processes']), (1, 0))

    def test_no_slot_and_a_held_connection_is_running_sampled(self):
        pool, proc = self.one(held={7: frozenset({11})})
        self.assertEqual((proc['worker_state'], proc['connections'],
                          proc['requests_source']), ('running', 1, 'sampled'))

    def test_connections_not_read_are_unknown_not_zero(self):
        pool, proc = self.one()
        self.assertEqual((proc['connections'], proc['worker_state']), (UNKNOWN, 'idle'))
        self.assertEqual(pool['connections'], 0)

    def test_a_worker_a_bound_left_unread_is_neither_idle_nor_active(self):
        status = poolstatus.pool_status(
            view(7, 8), facts(held={8: frozenset()})._replace(
                unavailable={7: 'pid 7 has more than 1024 fds'}), memory(), 110.0)
        self.assertEqual([(p['worker_state'], p['connections']) for p in status['processes']],
                         [('unknown', UNKNOWN), ('idle', 0)])
        self.assertEqual((status['idle_processes'], status['active_processes'],
                          status['total_processes']), (1, 0, 2))

    def test_a_stopped_process(self):
        pool, proc = self.one(proc_pid=0)
        self.assertEqual((proc['worker_state'], pool['total_processes']), ('stopped', 0))

    def test_an_idle_frozen_worker_is_frozen_not_idle(self):
        pool, proc = self.one(slots={7: slot(7, 'idle')}, frozen={7})
        self.assertEqual(proc['worker_state'], 'frozen')
        self.assertEqual((pool['idle_processes'], pool['active_processes'],
                          pool['frozen_processes']), (0, 0, 1))

    def test_a_sampled_frozen_worker_without_connections_is_frozen(self):
        pool, proc = self.one(held={7: frozenset()}, frozen={7})
        self.assertEqual(proc['worker_state'], 'frozen')

    def test_a_busy_worker_is_never_among_the_frozen_pids_read(self):
        self.assertTrue(readings.is_busy(slot(7, 'running'), None))
        self.assertTrue(readings.is_busy(NoSlot('no slot'), frozenset({3})))
        self.assertFalse(readings.is_busy(slot(7, 'idle'), None))
        self.assertFalse(readings.is_busy(None, None))

    def test_unreadable_slot_warns_missing_slot_does_not(self):
        pool = poolstatus.pool_status(
            view(7, 8), facts(slots={7: ScoreboardError('bad magic'), 8: NoSlot('no slot')}),
            memory(), 110.0)
        self.assertEqual(pool['warnings'], ['app_00: scoreboard slot unreadable: bad magic'])


class PoolStatusTests(unittest.TestCase):

    def test_totals_add_retired_and_baselines_subtract(self):
        mem = memory(retired={'exact': [5, 6], 'sampled': [1, 1]},
                     baselines={7: (2, 2)}, sampled_counts=collections.Counter({8: 3}))
        pool = poolstatus.pool_status(view(7, 8), facts(slots={7: slot(7, requests=10)},
                                                        held={8: frozenset()}),
                                      mem, 110.0)
        self.assertEqual([p['requests'] for p in pool['processes']], [8, 3])
        self.assertEqual((pool['requests'], pool['accepted_conn']), (6 + 1 + 8 + 3, 5 + 1 + 8 + 3))
        self.assertEqual(pool['requests_source'], 'mixed')
        self.assertEqual((pool['start_time'], pool['start_since']), (100, 10))
        self.assertEqual((pool['listen_queue'], pool['max_listen_queue'],
                          pool['listen_queue_len'], pool['listen_drops']), (2, 3, 16, 0))

    def test_warnings_quoting_worker_data_are_made_safe(self):
        pool = poolstatus.pool_status(view(7), facts(warnings=['app_00: x\ufffe\x1b']),
                                      memory(), 110.0)
        self.assertEqual(pool['warnings'], ['app_00: x%EF%BF%BE%1B'])

    def test_the_dict_survives_xmlrpc(self):
        uri = scoreboard.decode_slot(scoreboard.encode_slot(
            slot(7, request_uri='/\ufffe\x01'))).request_uri
        pool = poolstatus.pool_status(view(7), facts(slots={7: slot(7, request_uri=uri)}),
                                      memory(), 110.0)
        (loaded,), _ = xmlrpc.client.loads(xmlrpc.client.dumps((pool,), allow_none=False))
        self.assertEqual(loaded['processes'][0]['request_uri'], '/%EF%BF%BE%01')

    def test_guard_counts_are_reported(self):
        mem = memory(guard_counts=collections.Counter(slow_requests=2))
        pool = poolstatus.pool_status(view(), facts(), mem, 110.0)
        self.assertEqual((pool['slow_requests'], pool['terminated_requests']), (2, 0))
        self.assertEqual(pool['requests_source'], 'exact')
