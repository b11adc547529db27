"""A pool's process manager, PHP-FPM's `pm`, as pure decisions.

Given plain figures (the pool's live workers, each idle, busy or starting,
how many stopped processes may be started, the listen queue, the time) and
the pool's settings, `decide` says how many workers to start and which to
stop.  No supervisor object is read here: `poolsize` adapts.

The three managers follow php-src sapi/fpm/fpm/fpm_process_ctl.c:

- ``static``: run `target` workers (numprocs unless fcgi.setPoolSize said
  otherwise); today's behaviour, the default.
- ``dynamic``: once a second, stop the idlest worker when more than
  max_spare_servers are idle; start workers when fewer than
  min_spare_servers are idle, or connections wait and none is idle,
  1, 2, 4 ... up to max_spawn_rate at a time while that lasts.
- ``ondemand``: start a worker when connections wait and no worker is idle
  (the first one at once, by socket activation); once a second, stop the
  idlest worker idle longer than process_idle_timeout.

numprocs is the ceiling (pm.max_children).  max_children_reached counts
what PHP-FPM counts: the times the pool wanted more workers while at its
ceiling, once per episode (until a worker could be started again).
"""

import collections
from dataclasses import dataclass, field

__all__ = ['PM_STYLES', 'PmSettings', 'PmState', 'Worker', 'Figures', 'Decision',
           'pm_key', 'parse_pool_settings', 'check_pool_settings', 'decide',
           'floor_ceiling', 'parse_pm_options', 'parse_hold_timeout',
           'MAINTENANCE_INTERVAL', 'DEFAULT_HOLD_TIMEOUT']

PM_STYLES = ('static', 'dynamic', 'ondemand')
# PHP-FPM's maintenance heartbeat (FPM_IDLE_SERVER_MAINTENANCE_HEARTBEAT).
MAINTENANCE_INTERVAL = 1.0
DEFAULT_MAX_SPAWN_RATE = 32
DEFAULT_IDLE_TIMEOUT = 10.0
# Longer than a worker's usual restart, well short of nginx's 60 s timeouts.
DEFAULT_HOLD_TIMEOUT = 30.0
_NUMBERS = ('start_servers', 'min_spare_servers', 'max_spare_servers',
            'max_spawn_rate')
SETTING_NAMES = ('pm',) + tuple('pm.' + n for n in _NUMBERS
                                + ('process_idle_timeout',))

Worker = collections.namedtuple('Worker', 'name state idle_since')
Worker.__doc__ = """A live worker: state is 'idle', 'busy', 'starting' or
'stopping'; idle_since is when its last request ended (or it started)."""

Figures = collections.namedtuple('Figures', 'workers available queue')
Figures.__doc__ = """workers: the live Workers; available: stopped processes
the manager may start; queue: connections waiting in the listen queue."""

Decision = collections.namedtuple('Decision', 'start stop')
Decision.__doc__ = """start: how many workers to start; stop: the names of
the workers to stop gracefully, idlest first."""


@dataclass(frozen=True)
class PmSettings:
    pm: str = 'static'
    start_servers: int = 0
    min_spare_servers: int = 0
    max_spare_servers: int = 0
    max_spawn_rate: int = DEFAULT_MAX_SPAWN_RATE
    process_idle_timeout: float = DEFAULT_IDLE_TIMEOUT


@dataclass
class PmState:
    """What a pool's manager remembers between decisions."""
    ceiling: int                   # numprocs, or what setPoolSize set
    target: int                    # static: the workers to run
    idle_spawn_rate: int = 1
    warned_max_children: bool = False
    max_children_reached: int = 0
    last_maintenance: float = field(default=float('-inf'))


def pm_key(key):
    """(pool, setting) of an ``[rpcinterface:fcgi]`` key such as
    ``app.pm`` or ``app.pm.max_spare_servers``; None for other keys."""
    for name in SETTING_NAMES:
        if key.endswith('.' + name) and len(key) > len(name) + 1:
            return key[:-len(name) - 1], name
    if '.pm.' in key:   # a misspelt setting is an error, not another key
        pool, _, name = key.rpartition('.pm.')
        return pool, 'pm.' + name
    return None


def parse_pool_settings(pool, options):
    """PmSettings from {'pm': ..., 'pm.start_servers': ...} text values;
    ValueError names the key, its value and what is allowed."""
    def where(name):
        return '[rpcinterface:fcgi] %s.%s' % (pool, name)
    values = {}
    pm = options.get('pm', 'static').strip().lower()
    if pm not in PM_STYLES:
        raise ValueError('%s must be one of %s, not %r'
                         % (where('pm'), ', '.join(PM_STYLES), options['pm']))
    for name, raw in options.items():
        if name == 'pm':
            continue
        short = name[3:]
        if short not in _NUMBERS + ('process_idle_timeout',):
            raise ValueError('%s: unknown setting (known: %s)'
                             % (where(name), ', '.join(SETTING_NAMES)))
        if short == 'process_idle_timeout':
            values[short] = _seconds(where(name), raw)
        else:
            values[short] = _whole(where(name), raw,
                                   1 if short == 'max_spawn_rate' else 0)
    needed = {'static': (), 'ondemand': (),
              'dynamic': ('min_spare_servers', 'max_spare_servers')}[pm]
    for short in needed:
        if short not in values:
            raise ValueError('%s is required with pm = dynamic (as in PHP-FPM)'
                             % where('pm.' + short))
    if pm == 'dynamic':
        low, high = values['min_spare_servers'], values['max_spare_servers']
        if low < 1 or low > high:
            raise ValueError('%s (%d) must be at least 1 and at most '
                             'pm.max_spare_servers (%d)'
                             % (where('pm.min_spare_servers'), low, high))
        # PHP-FPM's default: halfway between the spare limits
        start = values.setdefault('start_servers', low + (high - low) // 2)
        if not low <= start <= high:
            raise ValueError('%s (%d) must be between pm.min_spare_servers (%d) '
                             'and pm.max_spare_servers (%d)'
                             % (where('pm.start_servers'), start, low, high))
    else:
        for short in ('start_servers', 'min_spare_servers', 'max_spare_servers'):
            if short in values:
                raise ValueError('%s only applies to pm = dynamic, not %s'
                                 % (where('pm.' + short), pm))
    return PmSettings(pm=pm, **values)


def check_pool_settings(pool, settings, numprocs):
    """ValueError when the settings do not fit the pool's numprocs."""
    if settings.pm != 'dynamic':
        return
    for short in ('start_servers', 'max_spare_servers'):
        value = getattr(settings, short)
        if value > numprocs:
            raise ValueError('[rpcinterface:fcgi] %s.pm.%s (%d) is more than the '
                             "pool's numprocs (%d), its pm.max_children"
                             % (pool, short, value, numprocs))


def _whole(where, raw, least):
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < least:
        raise ValueError('%s must be a whole number >= %d, not %r'
                         % (where, least, raw))
    return value


def _seconds(where, raw):
    text = raw.strip().lower()
    scale = 1.0
    for suffix, factor in (('ms', 0.001), ('s', 1.0), ('m', 60.0)):
        if text.endswith(suffix):
            text, scale = text[:-len(suffix)], factor
            break
    try:
        value = float(text) * scale
    except ValueError:
        value = -1
    if not 0 < value <= 86400:
        raise ValueError('%s must be seconds above 0 (10, 10s, 500ms, 1m), '
                         'not %r' % (where, raw))
    return value


def floor_ceiling(settings, state):
    """(floor, ceiling) the pool's number of workers moves between."""
    if settings.pm == 'static':
        return state.target, state.target
    if settings.pm == 'dynamic':
        return min(settings.min_spare_servers, state.ceiling), state.ceiling
    return 0, state.ceiling


def decide(settings, state, figures, now, may_stop=True):
    """What to do now; updates `state` (spawn rate, max_children_reached).

    `may_stop` is False while something else replaces the pool's workers
    (a rolling restart, a guard recycle): no worker is stopped then.
    """
    live = [w for w in figures.workers if w.state != 'stopping']
    if len(live) > state.ceiling:   # setPoolSize lowered the ceiling
        return Decision(0, _idlest(live, len(live) - state.ceiling)
                        if may_stop else [])
    if settings.pm == 'static':
        if len(live) < state.target:
            return Decision(min(state.target - len(live), figures.available), [])
        if len(live) > state.target and may_stop:
            return Decision(0, _idlest(live, len(live) - state.target))
        return Decision(0, [])
    if settings.pm == 'ondemand':
        return _ondemand(settings, state, live, figures, now, may_stop)
    if now - state.last_maintenance < MAINTENANCE_INTERVAL:
        return Decision(0, [])
    state.last_maintenance = now
    return _dynamic(settings, state, live, figures, may_stop)


def _grow(state, live, wanted, available):
    """Start `wanted` workers within the ceiling and what can start now;
    wanting more at the ceiling counts as max_children_reached."""
    if len(live) >= state.ceiling:
        _reached(state)
        return 0
    count = min(wanted, state.ceiling - len(live), available)
    if count > 0:
        state.warned_max_children = False
    return count


def _dynamic(settings, state, live, figures, may_stop):
    idle = [w for w in live if w.state == 'idle']
    starting = sum(1 for w in live if w.state == 'starting')
    if len(idle) > settings.max_spare_servers:
        state.idle_spawn_rate = 1
        return Decision(0, _idlest(idle, 1) if may_stop else [])
    # PHP-FPM looks at the idle count alone; connections waiting while no
    # worker is idle are wanted workers too (uWSGI's cheaper 'backlog')
    waiting = 0 if idle else figures.queue
    if len(idle) >= settings.min_spare_servers and not waiting:
        state.idle_spawn_rate = 1
        return Decision(0, [])
    missing = max(settings.min_spare_servers - len(idle), waiting) - starting
    if missing <= 0:
        return Decision(0, [])   # the workers starting will do
    count = _grow(state, live, min(state.idle_spawn_rate, missing),
                  figures.available)
    if count <= 0:
        state.idle_spawn_rate = 1
        return Decision(0, [])
    state.idle_spawn_rate = min(state.idle_spawn_rate * 2,
                                settings.max_spawn_rate)
    return Decision(count, [])


def _ondemand(settings, state, live, figures, now, may_stop):
    ready = sum(1 for w in live if w.state in ('idle', 'starting'))
    if figures.queue > ready:
        return Decision(_grow(state, live, min(figures.queue - ready,
                                               settings.max_spawn_rate),
                              figures.available), [])
    if now - state.last_maintenance < MAINTENANCE_INTERVAL:
        return Decision(0, [])
    state.last_maintenance = now
    expired = [w for w in live if w.state == 'idle'
               and now - w.idle_since > settings.process_idle_timeout]
    return Decision(0, _idlest(expired, 1) if may_stop else [])


def _reached(state):
    """Count an episode of wanting more than the ceiling, once."""
    if not state.warned_max_children:
        state.warned_max_children = True
        state.max_children_reached += 1


_STOP_ORDER = {'idle': 0, 'starting': 1, 'busy': 2}


def _idlest(workers, count):
    """The `count` workers to stop first: idle ones idle longest, then those
    still starting, busy ones last (they finish their request first)."""
    order = sorted(workers, key=lambda w: (_STOP_ORDER.get(w.state, 3),
                                           w.idle_since, w.name))
    return [w.name for w in order[:count]]


def parse_pm_options(options):
    """{pool: PmSettings} from the ``<pool>.pm*`` keys of [rpcinterface:fcgi]
    (pool names as supervisor hands the keys over: lowercased)."""
    by_pool = {}
    for key, value in options.items():
        pool, name = pm_key(key)
        by_pool.setdefault(pool, {})[name] = value
    return {pool: parse_pool_settings(pool, values)
            for pool, values in by_pool.items()}


def parse_hold_timeout(value):
    """hold_timeout: seconds a held socket waits for a worker; 0: forever."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= 86400:
        raise ValueError('[rpcinterface:fcgi] hold_timeout = %r is refused '
                         '(allowed: seconds from 0 to 86400; 0 holds forever)'
                         % (value,))
    return seconds
