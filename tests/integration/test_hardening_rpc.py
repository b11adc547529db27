"""Wrong arguments to an fcgi method, from a real client to a real
supervisord: INCORRECT_PARAMETERS saying why (supervisor itself turns any
TypeError into a bare one), and the namespace still answers."""
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab.harness import PoolSpec


@pytest.mark.parametrize('args, reason', [
    ((), "fcgi.getPoolStatus: missing a required argument: 'name'"),
    (('app', 2), 'fcgi.getPoolStatus: too many positional arguments'),
])
def test_wrong_arguments_get_incorrect_parameters_with_the_reason(supervisor_factory,
                                                                  args, reason):
    sup = supervisor_factory([PoolSpec(command='sleep 1000', numprocs=1)])
    with pytest.raises(xmlrpc.client.Fault) as info:
        sup.rpc.fcgi.getPoolStatus(*args)
    assert (info.value.faultCode, info.value.faultString) == (
        2, 'INCORRECT_PARAMETERS: ' + reason)
    assert sup.rpc.fcgi.getPoolStatus('app')['name'] == 'app'
    assert 'fcgi.getPoolStatus failed' not in open(sup.log_path).read()
