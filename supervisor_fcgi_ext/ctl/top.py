"""`supervisorctl fcgi_top`: a live view of the pools' workers, like uwsgitop.

A supervisorctl command rather than a console script: it then talks to
supervisord with supervisorctl's own serverurl, username and password (and
-c/-s/-u/-p options), which a second program would have to learn to read.

The screen is drawn by topscreen.render from the last two readings.  A
thread fetches them, so a supervisord that hangs or goes away never stops
the keys: the screen says so, keeps the last figures and reconnects.
"""
import curses
import math
import queue
import shlex
import sys
import threading
import time
import xmlrpc.client

from supervisor import xmlrpc as supervisor_xmlrpc
from supervisor.supervisorctl import LSBInitExitStatuses

from supervisor_fcgi_ext.ctl.options import UsageError, parse_status_args, split_words
from supervisor_fcgi_ext.ctl.topscreen import SORT_KEYS, Reading, clip, count_respawns, render

__all__ = ['USAGE', 'HELP', 'TopOptions', 'parse_args', 'fetch_pools', 'run_plain',
           'Screen', 'run_screen', 'run']

USAGE = ('fcgi_top [-d SECONDS] [--once | --batch N] [--sort KEY] [POOL ...]')
MESSAGE_SECONDS = 5     # how long 'reconnected' stays on the screen
SORT_NAMES = {name: key for key, (name, _, _) in SORT_KEYS.items()}
HELP = [
    USAGE,
    '\tLive view of the pools\' workers, refreshed every SECONDS (default 1):',
    '\tpool figures and rates, per worker requests/s, state, current request,',
    '\tduration, CPU, RSS, respawns.  Keys: q quit; n r s d m sort by name,',
    '\trequests, rate, duration, memory; tab/arrows switch pools.  --once or',
    '\t--batch N (and any output that is not a terminal): plain text screens.',
    '\t--sort name|requests|rate|duration|memory.',
]
FOOTER = 'q quit  sort: n name  r requests  s rate  d duration  m memory  ' \
         'tab/arrows: pool  up/down: scroll'


class TopOptions:
    def __init__(self):
        self.interval = 1.0
        self.batch = None      # None: the live screen; N: N plain screens
        self.sort = 'n'
        self.names = []


def _number(option, value, low, high, whole):
    """value as a number in [low, high], or UsageError saying what was wrong."""
    try:
        # not str.isdigit() alone: it takes '²', which int() refuses
        if whole and not (value.isascii() and value.isdigit()):
            raise ValueError
        number = int(value) if whole else float(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise UsageError('%s needs %s from %g to %g, not %r' % (
            option, 'a whole number' if whole else 'seconds', low, high, value))
    return number


def parse_args(arg):
    """TopOptions from the command's argument line, or UsageError."""
    words = split_words(arg)
    options = TopOptions()
    names = []
    while words:
        word = words.pop(0)
        option, has_value, value = word.partition('=')
        if option in ('-d', '--delay', '--batch', '--sort') and not has_value:
            if not words:
                raise UsageError('%s needs a value' % option)
            value = words.pop(0)
        if option in ('-d', '--delay'):
            options.interval = _number(option, value, 0.1, 3600, False)
        elif option == '--batch':
            options.batch = _number(option, value, 1, 100000, True)
        elif word == '--once':
            options.batch = 1
        elif option == '--sort':
            if value not in SORT_NAMES:
                raise UsageError('--sort is one of %s, not %r'
                                 % (', '.join(sorted(SORT_NAMES)), value))
            options.sort = SORT_NAMES[value]
        elif word.startswith('-'):
            raise UsageError('unknown option %s' % word)
        else:
            names.append(word)
    # the pool names as fcgi_status checks them
    options.names = parse_status_args(shlex.join(names))[1]
    return options


def fetch_pools(proxy, names):
    """A Reading of the named pools (all when none) from one fcgi proxy; a
    named pool that is gone is listed in its ``missing``."""
    if not names:
        return Reading(proxy.getAllPoolStatus())
    pools, missing = [], []
    for name in names:
        try:
            pools.append(proxy.getPoolStatus(name))
        except xmlrpc.client.Fault as e:
            if e.faultCode != supervisor_xmlrpc.Faults.BAD_NAME:
                raise
            missing.append(name)
    return Reading(pools, missing=missing)


def describe(error):
    """A failed reading as one line."""
    if isinstance(error, xmlrpc.client.Fault):
        return 'supervisord answered: %s' % error.faultString
    return 'cannot reach supervisord: %s' % (error,)


def title_line(url, options):
    return 'fcgi_top  %s  %s  every %gs  sort: %s' % (
        url, time.strftime('%H:%M:%S'), options.interval, SORT_KEYS[options.sort][0])


def run_plain(fetch, options, first, output, url='', sleep=time.sleep):
    """--once / --batch N: N screens of plain text, the first from the
    Reading ``first``; False when a later reading failed (said in its place)."""
    previous, current, respawns, ok = None, first, {}, True
    for number in range(options.batch):
        if number:
            sleep(options.interval)
            try:
                current = fetch()
            except Exception as e:
                output('%s\nError: %s\n' % (title_line(url, options), describe(e)))
                previous, ok = None, False
                continue
        count_respawns(previous, current, respawns)
        output('\n'.join(render(current, previous, None, options.sort, respawns,
                                title_line(url, options))))
        previous = current
    return ok


class Fetcher(threading.Thread):
    """Reads supervisord every interval into a queue: ('ok', Reading) or
    ('error', line).  A daemon: a call that hangs never holds up q."""

    def __init__(self, fetch, interval):
        super().__init__(daemon=True)
        self.fetch = fetch
        self.interval = interval
        self.results = queue.Queue()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            try:
                self.results.put(('ok', self.fetch()))
            except Exception as e:
                self.results.put(('error', describe(e)))


class Screen:
    """The live screen's state: readings, sort, pool shown, scroll, message."""

    def __init__(self, options, url, first):
        self.options = options
        self.url = url
        self.previous, self.current = None, first
        self.respawns = {}
        self.shown = 0         # 0: every pool; i: the i-th pool alone
        self.scroll = 0
        self.message = ''
        self.message_until = 0.0
        self.failing = False

    def take(self, kind, value):
        if kind == 'error':
            self.message = '%s; retrying every %gs' % (value, self.options.interval)
            self.previous = None        # rates start afresh after a gap
            self.failing = True
            return
        if self.failing:
            self.message = 'reconnected at %s' % time.strftime('%H:%M:%S')
            self.message_until = time.monotonic() + MESSAGE_SECONDS
        elif time.monotonic() >= self.message_until:
            self.message = ''
        self.failing = False
        count_respawns(self.current, value, self.respawns)
        self.previous, self.current = self.current, value

    def key(self, key):
        """Act on a key; False for quit."""
        count = len(self.current.pools)
        if key in ('q', 'Q'):
            return False
        if key in SORT_KEYS:
            self.options.sort = key
        elif key in ('\t', 'KEY_RIGHT') and count > 1:
            self.shown = (self.shown + 1) % (count + 1)
        elif key in ('KEY_BTAB', 'KEY_LEFT') and count > 1:
            self.shown = (self.shown - 1) % (count + 1)
        elif key in ('KEY_DOWN', 'j', 'KEY_NPAGE'):
            self.scroll += 10 if key == 'KEY_NPAGE' else 1
        elif key in ('KEY_UP', 'k', 'KEY_PPAGE'):
            self.scroll = max(0, self.scroll - (10 if key == 'KEY_PPAGE' else 1))
        return True

    def lines(self, width, height):
        """The lines to draw: title, message, the pools (scrolled), footer."""
        current = self.current
        if 0 < self.shown <= len(current.pools):
            current = Reading([current.pools[self.shown - 1]], current.when)
        body = render(current, self.previous, width, self.options.sort, self.respawns)
        head = [clip(title_line(self.url, self.options), width),
                clip(self.message, width)]
        room = max(0, height - len(head) - 1)
        self.scroll = min(self.scroll, max(0, len(body) - room))
        lines = head + body[self.scroll:self.scroll + room]
        return lines + [''] * (height - 1 - len(lines)) + [clip(FOOTER, width)]


def _draw(stdscr, screen):
    height, width = stdscr.getmaxyx()
    stdscr.erase()
    # one column short: curses cannot write the bottom right cell
    for y, line in enumerate(screen.lines(max(1, width - 1), height)[:height]):
        attr = curses.A_BOLD if y == 1 else (curses.A_REVERSE if y == height - 1 else 0)
        try:
            stdscr.addstr(y, 0, line, attr)
        except curses.error:
            pass
    stdscr.refresh()


def _keyname(code):
    if isinstance(code, str):
        return code
    return curses.keyname(code).decode('ascii', 'replace')


def run_screen(fetch, options, first, url):
    """The live screen until q (or ^C); curses restores the terminal after."""
    screen = Screen(options, url, first)
    fetcher = Fetcher(fetch, options.interval)

    def loop(stdscr):
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        stdscr.timeout(100)
        fetcher.start()
        _draw(stdscr, screen)
        while True:
            changed = False
            while not fetcher.results.empty():
                screen.take(*fetcher.results.get())
                changed = True
            try:
                code = stdscr.get_wch()
            except curses.error:
                code = None
            if code is not None:
                if not screen.key(_keyname(code)):
                    return
                changed = True
            if changed:
                _draw(stdscr, screen)
    try:
        curses.wrapper(loop)
    except KeyboardInterrupt:
        pass
    finally:
        fetcher.stopped.set()


def run(ctl, options, first):
    """fcgi_top after its first reading (``first``, a list of pool statuses):
    the live screen on a terminal, else (or when asked) plain screens."""
    fetch = lambda: fetch_pools(ctl.get_server_proxy('fcgi'), options.names)
    url = ctl.options.serverurl
    first = Reading(first)
    if options.batch is None and not (is_terminal(sys.stdin) and is_terminal(sys.stdout)):
        options.batch = 1
    if options.batch is not None:
        if not run_plain(fetch, options, first, ctl.output, url):
            ctl.exitstatus = LSBInitExitStatuses.GENERIC
        return
    run_screen(fetch, options, first, url)


def is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
