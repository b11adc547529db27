"""Our fault codes: distinct, and above every code supervisor has."""
from supervisor.xmlrpc import Faults as SupervisorFaults

from supervisor_fcgi_ext.common.faults import Faults


def test_our_codes_clash_with_none_of_supervisors_nor_each_other():
    ours = [v for k, v in vars(Faults).items() if k.isupper()]
    theirs = {v for k, v in vars(SupervisorFaults).items() if k.isupper()}
    assert len(set(ours)) == len(ours)
    assert not set(ours) & theirs
    assert all(code > max(theirs) for code in ours)
