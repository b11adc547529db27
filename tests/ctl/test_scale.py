"""fcgi_scale's command line and report line (ctl/scale.py)."""
import pytest

from supervisor_fcgi_ext.ctl.options import UsageError
from supervisor_fcgi_ext.ctl.scale import format_scale, parse_scale_args


@pytest.mark.parametrize('arg, expected', [
    ('app 2', ('app', 2)), ('app 0', ('app', 0)), ("'my app' 12", ('my app', 12)),
])
def test_parse(arg, expected):
    assert parse_scale_args(arg) == expected


@pytest.mark.parametrize('arg, message', [
    ('', 'fcgi_scale takes a pool name and a number, not 0 arguments'),
    ('app', 'fcgi_scale takes a pool name and a number, not 1 arguments'),
    ('app 1 2', 'fcgi_scale takes a pool name and a number, not 3 arguments'),
    ('app -1', "n must be a whole number from 0 to the pool's numprocs, not '-1'"),
    ('app ²', "n must be a whole number from 0 to the pool's numprocs, not '²'"),
    ('app 99999999999', "not '99999999999'"),
    ('--pool 1', "not a pool name: '--pool'"),
    ("'a\x1b' 1", "not a pool name: 'a\\x1b'"),
    ("'app 1", 'cannot read the arguments'),
])
def test_bad_command_lines_say_why(arg, message):
    with pytest.raises(UsageError) as raised:
        parse_scale_args(arg)
    assert message in str(raised.value)


def test_report_line():
    status = {'pm': 'dynamic', 'target': 3, 'floor': 2, 'ceiling': 8}
    assert format_scale('app', status) == 'app: pm dynamic, target 3, floor 2, ceiling 8'
