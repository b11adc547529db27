"""The harness as its users take it (lab/harness.py): a pool of real flup
workers under real supervisord, behind real nginx, and all of it gone after."""
from __future__ import annotations

import json
import urllib.request

import pytest

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import Nginx, PoolSpec, Supervisor, session_processes

NO_PLUGIN = dict(rpcinterface=False, ctlplugin=False)


@pytest.mark.parametrize('kind, keepalive', [('tcp', False), ('unix', True)])
def test_pool_behind_nginx_serves_and_stops_clean(flupapp_command, requires_nginx,
                                                  assert_all_gone, kind, keepalive):
    sup = Supervisor([PoolSpec(command=flupapp_command, numprocs=3, socket=kind)],
                     unix_http_server=True, **NO_PLUGIN)
    nginx = Nginx(sup.pools[0].resolve_socket(sup.workdir), keepalive=keepalive,
                  nginx=requires_nginx)
    with sup:
        pids = sup.pids('app')
        assert sorted(pids) == ['app_00', 'app_01', 'app_02']
        with nginx:
            served = set()
            for _ in range(12):
                with urllib.request.urlopen(nginx.url + '/hello?x=1', timeout=10) as r:
                    assert r.status == 200
                    data = json.loads(r.read())
                assert (data['path'], data['query']) == ('/hello', 'x=1')
                served.add(data['pid'])
            assert served <= set(pids.values())
            nginx_sid, nginx_pids = nginx.pid, session_processes(nginx.pid)
            assert len(nginx_pids) == 2   # master + one worker
        assert_all_gone(nginx_sid, nginx_pids, nginx.workdir)
        direct = fcgi_request(sup.pools[0].socket_url, '/', timeout=10)
        assert json.loads(direct.body)['pid'] in pids.values()
        status = sup.ctl('status', check=True).stdout
        assert status.count('RUNNING') == 3, status
        sid = sup.pid
    assert_all_gone(sid, list(pids.values()), sup.workdir)
