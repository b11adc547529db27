"""poolstatus: the status dicts from plain facts and memory, no I/O."""
import collections
import random
import unittest
import xmlrpc.client
from dataclasses import replace as dataclasses_replace

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.common.scoreboard import ScoreboardError, NoSlot, Slot
from supervisor_fcgi_ext.supervisord import durations, poolstatus, readings
from supervisor_fcgi_ext.supervisord.durations import Durations
from supervisor_fcgi_ext.supervisord.lifecycle import EVENTS, Lifecycle
from supervisor_fcgi_ext.supervisord.pools import PoolView, ProcessView
from supervisor_fcgi_ext.supervisord.readings import Facts, UNKNOWN
from supervisor_fcgi_ext.supervisord.sockstats import ListenerStats
from supervisor_fcgi_ext.supervisord.statusmemo import StatusMemo


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
                guard_counts=collections.Counter(), durations=durations.EMPTY,
                lifecycle=Lifecycle())
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
        self.assertEqual([p['slot_status'] for p in pool['processes']],
                         ['unavailable', 'absent'])

    def test_slot_status_and_the_last_request_duration_also_while_busy(self):
        pool = poolstatus.pool_status(
            view(7, 0), facts(slots={7: slot(7, 'running', 3, request_duration_us=90,
                                              last_request_duration_us=40)}),
            memory(), 110.0)
        running, stopped = pool['processes']
        self.assertEqual((running['slot_status'], running['request_duration'],
                          running['last_request_duration']), ('ok', 90, 40))
        self.assertEqual((stopped['slot_status'], stopped['last_request_duration']),
                         ('absent', 0))


class PoolStatusTests(unittest.TestCase):

    def test_totals_add_retired_and_baselines_subtract(self):
        mem = memory(retired={'exact': [5, 6], 'sampled': [1, 1]},
                     baselines={7: (2, 2, durations.EMPTY)}, sampled_counts=collections.Counter({8: 3}))
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

    def test_max_processes_is_the_configured_number_running_or_not(self):
        pool = poolstatus.pool_status(view(7, 0, 0), facts(), memory(), 110.0)
        self.assertEqual((pool['total_processes'], pool['max_processes']), (1, 3))

    def test_the_histogram_adds_exited_workers_and_live_ones_since_their_baseline(self):
        def counts(*pairs):
            out = [0] * scoreboard.DURATION_BUCKETS
            for bucket, count in pairs:
                out[bucket] = count
            return tuple(out)
        mem = memory(durations=Durations(counts((0, 10)), 20000),
                     baselines={7: (0, 0, Durations(counts((0, 1), (3, 2)), 60000))})
        live = {7: slot(7, requests=9, request_duration_counts=counts((0, 5), (3, 4)),
                        request_duration_sum_us=160000),
                8: slot(8, requests=4, request_duration_counts=counts((11, 4)),
                        request_duration_sum_us=4 * 20 * 10 ** 6)}
        pool = poolstatus.pool_status(view(7, 8, 9), facts(slots={
            **live, 9: ScoreboardError('bad magic')}), mem, 110.0)
        # 10 exited; pid 7: 4 + 2 since its baseline; pid 8: 4 above 10 s
        self.assertEqual(pool['request_duration_count'], 20)
        self.assertEqual(pool['request_duration_buckets'][0], [0.005, 14])
        self.assertEqual(pool['request_duration_buckets'][3], [0.05, 16])
        self.assertEqual(pool['request_duration_buckets'][-1], [10.0, 16])
        self.assertEqual(len(pool['request_duration_buckets']), 11)
        self.assertAlmostEqual(pool['request_duration_sum'], 0.02 + 0.1 + 80)
        self.assertAlmostEqual(pool['request_duration_p50'], 0.005 * 10 / 14, places=5)
        self.assertEqual(pool['request_duration_p99'], 10.0)    # above the last bound

    def test_no_request_has_no_percentiles(self):
        pool = poolstatus.pool_status(view(7), facts(slots={7: slot(7)}), memory(), 110.0)
        self.assertEqual((pool['request_duration_count'], pool['request_duration_p50'],
                          pool['request_duration_p99']), (0, UNKNOWN, UNKNOWN))

    def test_lifecycle_counts_per_process_and_pool(self):
        life = Lifecycle()
        for name in ('app_00', 'app_00', 'app_00', 'app_01', 'gone_02', 'gone_02'):
            life.started(name)
        life.count('app_01', 'unexpected_exits')
        life.count('app_00', 'recycles')
        life.count('app_00', 'guard_kills')
        pool = poolstatus.pool_status(view(7, 8), facts(), memory(lifecycle=life), 110.0)
        first, second = pool['processes']
        self.assertEqual((first['respawns'], first['recycles'], first['guard_kills'],
                          first['unexpected_exits']), (2, 1, 1, 0))
        self.assertEqual((second['respawns'], second['unexpected_exits']), (0, 1))
        # a process no longer in the pool still counts in the pool's totals
        self.assertEqual((pool['respawns'], pool['unexpected_exits'], pool['recycles'],
                          pool['guard_kills']), (3, 1, 1, 1))

    def test_guard_counts_are_reported(self):
        mem = memory(guard_counts=collections.Counter(slow_requests=2))
        pool = poolstatus.pool_status(view(), facts(), mem, 110.0)
        self.assertEqual((pool['slow_requests'], pool['terminated_requests']), (2, 0))
        self.assertEqual(pool['requests_source'], 'exact')


class MemoTests(unittest.TestCase):
    """A status made with a StatusMemo equals one made from scratch, whatever
    input moves between two statuses; unchanged entries are given again."""

    NOW = 2000.0

    def setUp(self):
        self.memo = StatusMemo()
        self.procs = [ProcessView('app_%02d' % i, 100 + i, 'RUNNING', 5) for i in range(4)]
        self.slots = {p.pid: slot(p.pid, requests=i) for i, p in enumerate(self.procs)}
        self.frozen, self.mem = frozenset(), memory()
        self.unkept = set()    # pids whose slot was read without keeping its record
        self.held = {}         # the connections of pids without a slot

    def facts(self):
        """Facts as a SlotCache gives them: each Slot decoded from its record."""
        records = {pid: scoreboard.encode_slot(s, 2) for pid, s in self.slots.items()}
        found = {pid: scoreboard.decode_slot(data, self.NOW, pid)
                 for pid, data in records.items()}
        return facts(slots=found, frozen=self.frozen, held=self.held)._replace(records={
            pid: data for pid, data in records.items() if pid not in self.unkept})

    def both(self, facts=None):
        """(with the memo, from scratch), after checking they are equal."""
        facts = facts or self.facts()
        pool_view = view()._replace(processes=list(self.procs))
        kept = poolstatus.pool_status(pool_view, facts, self.mem, 110.0, self.memo)
        fresh = poolstatus.pool_status(pool_view, facts, self.mem, 110.0)
        self.assertEqual(kept, fresh)
        return kept, fresh

    def test_unchanged_inputs_give_the_same_entries_and_histogram_again(self):
        facts = self.facts()
        first, _ = self.both(facts)
        second, _ = self.both(facts._replace(records=dict(facts.records)))
        self.assertTrue(all(a is b for a, b in zip(first['processes'], second['processes'])))
        self.assertIs(first['request_duration_buckets'], second['request_duration_buckets'])

    def test_without_records_nothing_is_given_again(self):
        facts = self.facts()._replace(records=None)
        first, _ = self.both(facts)
        second, _ = self.both(facts)
        self.assertFalse(any(a is b for a, b in zip(first['processes'], second['processes'])))

    def test_a_busy_entry_moves_its_duration_only(self):
        self.slots[100] = slot(100, 'running', 3, request_start=self.NOW - 1.0)
        facts = self.facts()
        first, _ = self.both(facts)
        later = facts._replace(slots=dict(facts.slots, **{}))
        later.slots[100] = scoreboard.decode_slot(facts.records[100], self.NOW + 2, 100)
        second, _ = self.both(later)
        self.assertEqual(second['processes'][0]['request_duration'],
                         first['processes'][0]['request_duration'] + 2000000)
        self.assertEqual({k: v for k, v in first['processes'][0].items()
                          if k != 'request_duration'},
                         {k: v for k, v in second['processes'][0].items()
                          if k != 'request_duration'})

    def test_every_input_moved_in_turn_matches_a_status_from_scratch(self):
        rng = random.Random(15)
        life = self.mem.lifecycle
        for _ in range(400):
            i = rng.randrange(len(self.procs))
            proc = self.procs[i]
            old = self.slots.get(proc.pid) or slot(proc.pid)
            what = rng.randrange(12)
            if what == 0:     # the slot moved: a request answered, a state
                self.slots[proc.pid] = dataclasses_replace(
                    old, state=rng.choice(('idle', 'running', 'reading')),
                    requests=old.requests + rng.randrange(2), request_start=self.NOW - 1,
                    request_duration_counts=tuple(c + rng.randrange(2)
                                                  for c in old.request_duration_counts),
                    request_duration_sum_us=old.request_duration_sum_us + 7)
            elif what == 1:   # supervisor's state of the process
                self.procs[i] = proc._replace(state=rng.choice(('RUNNING', 'STOPPING')),
                                              start=rng.randrange(3))
            elif what == 2:   # a reset: new baselines
                self.mem = self.mem._replace(baselines={
                    pid: (s.accepted_conn, s.requests, durations.of_slot(s))
                    for pid, s in self.slots.items() if rng.randrange(2)})
            elif what == 3:
                life.count(proc.name, rng.choice(EVENTS))
            elif what == 4:
                life.started(proc.name)
            elif what == 5:
                self.frozen = frozenset(p.pid for p in self.procs if rng.randrange(3) == 0)
            elif what == 6:   # an exit (its durations retired), respawned under a new pid
                self.slots.pop(proc.pid, None)
                self.mem = self.mem._replace(durations=durations.add(
                    self.mem.durations, Durations((1,) * scoreboard.DURATION_BUCKETS, 9)))
                self.procs[i] = proc._replace(pid=proc.pid + 1000)
                self.slots[proc.pid + 1000] = slot(proc.pid + 1000, requests=old.requests)
            elif what == 7:   # the pid's slot now another worker's, the same counts
                self.slots[proc.pid] = dataclasses_replace(old, start_time=old.start_time + 1)
            elif what == 8:   # the fd budget reached: its slot read, its record not kept
                self.unkept ^= {proc.pid}
            elif what == 9:   # an exit of a worker whose slot no status read
                self.mem = self.mem._replace(durations=durations.add(
                    self.mem.durations, Durations((2,) * scoreboard.DURATION_BUCKETS, 5)))
            elif what == 10:  # a worker without a slot holds a connection, or none
                self.held[proc.pid] = frozenset(range(rng.randrange(2)))
            elif proc.pid in self.slots:   # no slot any more, or a slot again
                del self.slots[proc.pid]
            else:
                self.slots[proc.pid] = old
            self.both()

    def test_a_lifecycle_count_moves_its_version(self):
        life = Lifecycle()
        versions = [life.version]
        life.started('a')
        life.started('a')
        versions.append(life.version)
        life.count('a', 'recycles')
        versions.append(life.version)
        life.reset()
        versions.append(life.version)
        self.assertEqual(len(set(versions)), 4)
