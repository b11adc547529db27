"""`supervisorctl fcgi_scale POOL N`: its command line and its report."""

from supervisor_fcgi_ext.ctl.options import UsageError, split_words

__all__ = ['parse_scale_args', 'format_scale', 'HELP']

HELP = ('fcgi_scale <pool> <n>\t\tRun n of the pool\'s workers (0 to numprocs) '
        'without',
        '\t\t\t\trestarting the running ones; for a dynamic or ondemand',
        '\t\t\t\tpool, n is the most it may grow to.')


def parse_scale_args(arg):
    """(pool, n) from 'POOL N'; UsageError says what is wrong."""
    words = split_words(arg)
    if len(words) != 2:
        raise UsageError('fcgi_scale takes a pool name and a number, not %d '
                         'arguments' % len(words))
    name, count = words
    if name.startswith('-') or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UsageError('not a pool name: %r' % name)
    # not str.isdigit(): it takes '²', which int() refuses
    if not (count.isascii() and count.isdigit()) or len(count) > 9:
        raise UsageError('n must be a whole number from 0 to the pool\'s '
                         'numprocs, not %r' % count)
    return name, int(count)


def format_scale(name, status):
    """The line fcgi_scale prints from setPoolSize's answer."""
    return ('%s: pm %s, target %d, floor %d, ceiling %d'
            % (name, status['pm'], status['target'], status['floor'],
               status['ceiling']))
