"""fcgi-worker: the reference FastCGI worker, one process of a pool.

Code here runs in a worker's per-request path, where a microsecond matters.
cli.py starts it; base.py is the accept loop and signals, single.py and
threaded.py the two process models, connection.py a connection's records,
gateway.py the WSGI side of a request, slotwriter.py the scoreboard slot
(ordering.py: which writer is right on this CPU).  FastCGI framing is
common/fastcgi.py.
"""
import os
import sys


def log(message):
    """One line on stderr, named by pid as supervisord's log shows it; a
    closed stderr loses the line, never the request."""
    try:
        sys.stderr.write('fcgi-worker[%d]: %s\n' % (os.getpid(), message))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
