"""The [rpcinterface:fcgi] keys, read once per factory call.

Every key has a default and a parser; a parser raises ValueError with the
one line supervisord shows when it refuses to start (key, value, what is
allowed).  A new key is one parser and one line in `KEYS`.
"""

import posixpath

from supervisor.datatypes import boolean

from supervisor_fcgi_ext.supervisord.httpserve import parse_listen
from supervisor_fcgi_ext.supervisord.procmanager import (
    DEFAULT_HOLD_TIMEOUT, parse_hold_timeout, parse_pm_options, pm_key)

__all__ = ['AUTO', 'KEYS', 'parse_settings']

AUTO = 'auto'   # scoreboard_dir: a directory of this supervisord's own


def _refuse(key, value, allowed):
    return ValueError('[rpcinterface:fcgi] %s = %r is refused (allowed: %s)'
                      % (key, value, allowed))


def parse_sample_interval(value):
    try:
        interval = float(value)
    except ValueError:
        interval = -1
    if not 0.1 <= interval <= 60:
        raise _refuse('sample_interval', value, 'seconds between 0.1 and 60')
    return interval


SCOREBOARD_DIR_RULE = ('auto, none, or an absolute path (not /, no . or .. part) '
                       'to a directory that is not a symlink, is owned by '
                       "supervisord's user and is not world-writable unless sticky")


def parse_scoreboard_dir(value):
    """auto -> AUTO, none -> None, else the path with single slashes; the
    directory itself is checked when the plugin prepares it (boarddir)."""
    text = value.strip()
    if text.lower() in (AUTO, 'none'):
        return AUTO if text.lower() == AUTO else None
    parts = [p for p in text.split('/') if p]
    if not text.startswith('/') or not parts or any(p in ('.', '..') for p in parts):
        raise _refuse('scoreboard_dir', value, SCOREBOARD_DIR_RULE)
    return posixpath.join('/', *parts)


def parse_hold_sockets(value):
    try:
        return boolean(value)
    except ValueError:
        raise _refuse('hold_sockets', value, 'true or false')


# key: (default, parser of the configured text)
KEYS = {
    'sample_interval': (0.5, parse_sample_interval),
    'scoreboard_dir': (AUTO, parse_scoreboard_dir),
    'hold_sockets': (True, parse_hold_sockets),
    'metrics_listen': (None, parse_listen),
    'hold_timeout': (DEFAULT_HOLD_TIMEOUT, parse_hold_timeout),
}


def parse_settings(config):
    """[rpcinterface:fcgi] keys -> settings; ValueError names the bad key."""
    settings = {key: default for key, (default, _) in KEYS.items()}
    pm_options = {}   # <pool>.pm and <pool>.pm.*: procmanager's
    for key, value in config.items():
        if pm_key(key):
            pm_options[key] = value
            continue
        if key not in KEYS:
            raise ValueError('[rpcinterface:fcgi] unknown key %r (known: %s, '
                             '<pool>.pm, <pool>.pm.*)' % (key, ', '.join(sorted(KEYS))))
        settings[key] = KEYS[key][1](value)
    settings['pm'] = parse_pm_options(pm_options)
    return settings
