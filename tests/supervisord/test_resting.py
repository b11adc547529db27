"""While the sampling hook rests (loophook), samples come about once a
second: what the plugin schedules in sample intervals still comes on time."""
import os
import time

from supervisor import events

from supervisor_fcgi_ext.supervisord import plugin
from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface
from supervisor_fcgi_ext.supervisord.slots import ensure_pool_dir
from test_rpcinterface import make_supervisord
from pluginstate import forget_plugins


def test_a_sample_after_a_rest_counts_the_intervals_that_passed(tmp_path):
    events.clear()
    try:
        p = make_fcgi_rpcinterface(make_supervisord(), scoreboard_dir=str(tmp_path),
                                   sample_interval='0.5').plugin
        stale = os.path.join(ensure_pool_dir(str(tmp_path), 'app'), '999999.slot')
        open(stale, 'w').close()
        p.samples = plugin.STALE_SLOT_SWEEP - 2
        p.sampled_at = time.monotonic() - 1.0      # a resting hook's second
        p.sample_all()
        assert p.samples == plugin.STALE_SLOT_SWEEP
        assert not os.path.exists(stale)           # the sweep came on time
        p.sample_all()                             # 0.5 s not yet passed: one
        assert p.samples == plugin.STALE_SLOT_SWEEP + 1 and not p.sweep_due
    finally:
        forget_plugins()
