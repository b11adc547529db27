"""The command lines of fcgi_status and fcgi_restart (options.py): what
each accepts, and the one line each refusal says."""
import pytest

from supervisor_fcgi_ext.ctl.options import (MAX_BATCH, UsageError, parse_batch,
                                             parse_restart_args, parse_status_args)


@pytest.mark.parametrize('arg, parsed', [
    ('', (False, [])),
    ('--json', (True, [])),
    ('app other', (False, ['app', 'other'])),
    ('app --json', (True, ['app'])),
    ("'my pool' --json --json", (True, ['my pool'])),
    ('é&<', (False, ['é&<'])),
])
def test_status_args(arg, parsed):
    assert parse_status_args(arg) == parsed


@pytest.mark.parametrize('arg, parsed', [
    ('app', ('app', 1)),
    ('app --batch 3', ('app', 3)),
    ('--batch=3 app', ('app', 3)),
    ('app --batch 007', ('app', 7)),
    ('app --batch %d' % MAX_BATCH, ('app', MAX_BATCH)),
    ('app --batch 2 --batch 4', ('app', 4)),
])
def test_restart_args(arg, parsed):
    assert parse_restart_args(arg) == parsed


BATCH = "--batch needs a whole number from 1 to 2147483647, not %r"


@pytest.mark.parametrize('arg, error', [
    ('app --batch ²', BATCH % '²'),           # str.isdigit() says yes, int() no
    ('app --batch ٣', BATCH % '٣'),           # int() would read 3
    ('app --batch 99999999999', BATCH % '99999999999'),   # XML-RPC has no such int
    ('app --batch %d' % (MAX_BATCH + 1), BATCH % str(MAX_BATCH + 1)),
    ('app --batch 0', BATCH % '0'),
    ('app --batch -1', BATCH % '-1'),
    ('app --batch=', BATCH % ''),
    ('app --batch=x', BATCH % 'x'),
    ("app --batch ' 3'", BATCH % ' 3'),
    ('app --batch 1e3', BATCH % '1e3'),
    ('app --batch', '--batch needs a value'),
    ('', 'fcgi_restart takes one pool name, not 0'),
    ('a b', 'fcgi_restart takes one pool name, not 2'),
    ('app -x', 'unknown option -x'),
    ('app --json', 'unknown option --json'),
    ('app "', 'cannot read the arguments: no closing quotation'),
    ('app \\', 'cannot read the arguments: no escaped character'),
    ('a\x01', "a pool name cannot contain control characters: 'a\\x01'"),
])
def test_restart_refusals_are_one_line(arg, error):
    with pytest.raises(UsageError) as info:
        parse_restart_args(arg)
    assert str(info.value) == error


@pytest.mark.parametrize('arg, error', [
    ('--jsno', 'unknown option --jsno'),
    ('app --json=1', 'unknown option --json=1'),
    ('-', 'unknown option -'),
    ("'", 'cannot read the arguments: no closing quotation'),
    ('app\x7f', "a pool name cannot contain control characters: 'app\\x7f'"),
    ('a\udcff', "a pool name must be UTF-8: 'a\\udcff'"),
])
def test_status_refusals_are_one_line(arg, error):
    with pytest.raises(UsageError) as info:
        parse_status_args(arg)
    assert str(info.value) == error
    assert '\n' not in str(info.value)


def test_batch_is_ascii_digits_in_the_xmlrpc_int_range():
    assert parse_batch('1') == 1 and parse_batch('2147483647') == 2 ** 31 - 1
    for value in ('２', '', '+1', '1_0'):   # int() takes the last two
        with pytest.raises(UsageError):
            parse_batch(value)
