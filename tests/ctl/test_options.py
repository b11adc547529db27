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


@pytest.mark.parametrize('parse, arg, error', [
    # str.isdigit() takes '²' (int() does not) and '٣' (int() reads 3);
    # XML-RPC has no int as large as 99999999999
    (parse_restart_args, 'app --batch ²', BATCH % '²'),
    (parse_restart_args, 'app --batch ٣', BATCH % '٣'),
    (parse_restart_args, 'app --batch 99999999999', BATCH % '99999999999'),
    (parse_restart_args, 'app --batch 2147483648', BATCH % '2147483648'),
    (parse_restart_args, 'app --batch 0', BATCH % '0'),
    (parse_restart_args, 'app --batch -1', BATCH % '-1'),
    (parse_restart_args, 'app --batch=', BATCH % ''),
    (parse_restart_args, 'app --batch=x', BATCH % 'x'),
    (parse_restart_args, "app --batch ' 3'", BATCH % ' 3'),
    (parse_restart_args, 'app --batch 1e3', BATCH % '1e3'),
    (parse_restart_args, 'app --batch', '--batch needs a value'),
    (parse_restart_args, '', 'fcgi_restart takes one pool name, not 0'),
    (parse_restart_args, 'a b', 'fcgi_restart takes one pool name, not 2'),
    (parse_restart_args, 'app -x', 'unknown option -x'),
    (parse_restart_args, 'app --json', 'unknown option --json'),
    (parse_restart_args, 'app "', 'cannot read the arguments: no closing quotation'),
    (parse_restart_args, 'app \\', 'cannot read the arguments: no escaped character'),
    (parse_restart_args, 'a\x01',
     "a pool name cannot contain control characters: 'a\\x01'"),
    (parse_status_args, '--jsno', 'unknown option --jsno'),
    (parse_status_args, 'app --json=1', 'unknown option --json=1'),
    (parse_status_args, '-', 'unknown option -'),
    (parse_status_args, "'", 'cannot read the arguments: no closing quotation'),
    (parse_status_args, 'app\x7f',
     "a pool name cannot contain control characters: 'app\\x7f'"),
    (parse_status_args, 'a\udcff', "a pool name must be UTF-8: 'a\\udcff'"),
])
def test_refusals_are_one_line(parse, arg, error):
    with pytest.raises(UsageError) as info:
        parse(arg)
    assert str(info.value) == error


def test_batch_is_ascii_digits_in_the_xmlrpc_int_range():
    assert parse_batch('1') == 1 and parse_batch('2147483647') == 2 ** 31 - 1
    for value in ('２', '', '+1', '1_0'):   # int() takes the last two
        with pytest.raises(UsageError):
            parse_batch(value)
