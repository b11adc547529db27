"""The command lines of fcgi_status and fcgi_restart, as plain functions.

Each returns what the command needs or raises UsageError with the one line
supervisorctl prints before the command's usage (exit status 2, as
supervisor's own commands do for bad arguments).
"""
import shlex

__all__ = ['UsageError', 'MAX_BATCH', 'parse_status_args', 'parse_restart_args']

# The largest int XML-RPC carries: rollingRestart could not be called with more.
MAX_BATCH = 2 ** 31 - 1


class UsageError(ValueError):
    """A command line the command cannot run; str() is the one line to print."""


def split_words(arg):
    """supervisorctl's argument string as words; quotes as in a shell."""
    try:
        return shlex.split(arg)
    except ValueError as e:   # shlex: 'No closing quotation', 'No escaped character'
        raise UsageError('cannot read the arguments: %s' % str(e).lower()) from None


def _pool_name(word):
    """A pool name as typed, or UsageError for what an XML-RPC string cannot
    carry (control characters, text that is not UTF-8)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        raise UsageError('a pool name cannot contain control characters: %r'
                         % word)
    try:
        word.encode('utf-8')
    except UnicodeEncodeError:   # bytes of another encoding in argv
        raise UsageError('a pool name must be UTF-8: %r' % word) from None
    if word.startswith('-'):
        raise UsageError('unknown option %s' % word)
    return word


def parse_status_args(arg):
    """(as_json, pool names) from '[--json] [POOL ...]' in any order."""
    words = split_words(arg)
    as_json = '--json' in words
    names = [_pool_name(w) for w in words if w != '--json']
    return as_json, names


def parse_batch(value):
    """--batch's value: ASCII digits, from 1 to MAX_BATCH."""
    # Not str.isdigit(): it takes '²' and other digits int() refuses or reads.
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_BATCH:
        raise UsageError('--batch needs a whole number from 1 to %d, not %r'
                         % (MAX_BATCH, value))
    return int(value)


def parse_restart_args(arg):
    """(pool, batch) from 'POOL [--batch N]' (or --batch=N), in any order."""
    words = split_words(arg)
    batch = 1
    names = []
    while words:
        word = words.pop(0)
        if word == '--batch':
            if not words:
                raise UsageError('--batch needs a value')
            batch = parse_batch(words.pop(0))
        elif word.startswith('--batch='):
            batch = parse_batch(word[len('--batch='):])
        else:
            names.append(_pool_name(word))
    if len(names) != 1:
        raise UsageError('fcgi_restart takes one pool name, not %d' % len(names))
    return names[0], batch
