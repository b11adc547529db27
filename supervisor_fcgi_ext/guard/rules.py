"""The guard's pure decisions: alarm episodes, crash windows, stack extraction.

No I/O here: fcgi-guard (listener.py) feeds these the figures it read from
supervisord and the text it read from a worker's log, and a clock.
"""
import collections
import re

__all__ = ['QueueWatch', 'CrashWatch', 'extract_stack']

_STACK_HEADER = re.compile(r'^(?:(?:Current thread|Thread) 0x[0-9a-fA-F]+|Stack)'
                           r' \(most recent call first\):$')


def extract_stack(text):
    """The faulthandler dump in ``text`` (new bytes of a worker's log), or ''."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _STACK_HEADER.match(line)),
                 None)
    if start is None:
        return ''
    dump = []
    for line in lines[start:]:
        if line and not line.startswith(' ') and not _STACK_HEADER.match(line):
            break    # the worker's next log line, not part of the dump
        dump.append(line)
    return '\n'.join(dump).rstrip()


class QueueWatch:
    """One pool's listen-queue alarm.  Raised after two bad checks in a row and
    cleared after two good ones, so a queue hovering at the threshold makes
    one alarm per episode, not one per check."""

    STREAK = 2

    def __init__(self, percent):
        self.percent = percent
        self.drops = None
        self.bad = self.good = 0
        self.alarmed = False

    def check(self, queue, backlog, drops):
        """(change, reasons): change is 'raise', 'clear' or None; figures of
        -1 (unknown) never make a check bad."""
        reasons = []
        if queue >= 0 and backlog > 0 and queue * 100 >= self.percent * backlog:
            reasons.append('listen queue %d of backlog %d (>= %g%%)'
                           % (queue, backlog, self.percent))
        if drops >= 0 and self.drops is not None and drops > self.drops:
            reasons.append('%d new drops' % (drops - self.drops))
        # A smaller count means a new socket: it is the new baseline.
        self.drops = drops if drops >= 0 else None
        if reasons:
            self.bad, self.good = self.bad + 1, 0
            if self.bad >= self.STREAK and not self.alarmed:
                self.alarmed = True
                return 'raise', reasons
        else:
            self.bad, self.good = 0, self.good + 1
            if self.good >= self.STREAK and self.alarmed:
                self.alarmed = False
                return 'clear', reasons
        return None, reasons


class CrashWatch:
    """Unexpected exits of one pool's workers in a sliding window."""

    def __init__(self, count, window, clock):
        self.count, self.window, self.clock = count, window, clock
        self.exits = collections.deque()
        self.alarmed = False

    def _prune(self):
        horizon = self.clock() - self.window
        while self.exits and self.exits[0] <= horizon:
            self.exits.popleft()

    def exited(self):
        """Count one exit; True when that makes a new alarm."""
        self.exits.append(self.clock())
        self._prune()
        if len(self.exits) >= self.count and not self.alarmed:
            self.alarmed = True
            return True
        return False

    def cleared(self):
        """True once, when an alarmed pool's exits fall below the threshold."""
        self._prune()
        if self.alarmed and len(self.exits) < self.count:
            self.alarmed = False
            return True
        return False
