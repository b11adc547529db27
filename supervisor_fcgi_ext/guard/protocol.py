"""The listener's side of supervisord's event protocol, with limits.

supervisord writes one event (a header line, then ``len`` characters of
payload) after each READY and sends nothing more until RESULT.  childutils
reads with no limit: a header without a colon or a ``len`` raises, and a
``len`` larger than what follows blocks for ever.  Here waiting for an event
to begin is unbounded (events come when they come) but the rest of it must
arrive within REST_WAIT and fit MAX_HEADER / MAX_PAYLOAD; anything else is a
BadEvent, and whatever arrived of it is discarded, so the next READY starts
clean.
"""
import codecs
import os
import re
import select
import time

__all__ = ['BadEvent', 'EventReader', 'parse_fields', 'parse_headers', 'MAX_HEADER', 'MAX_PAYLOAD',
           'REST_WAIT']

MAX_HEADER = 4096        # characters; supervisor's header lines are ~150
MAX_PAYLOAD = 1 << 20    # characters; TICK and PROCESS_STATE payloads are < 300
REST_WAIT = 2.0          # seconds for the rest of an event once it began
QUIET = 0.1              # a bad event's leftovers: read until silent this long
READ_SIZE = 65536

_LEN = re.compile(r'[0-9]{1,19}\Z')


class BadEvent(Exception):
    """An event this listener cannot frame; the message is one line."""


def _shown(text, limit=60):
    return repr(text[:limit]) + ('...' if len(text) > limit else '')


def parse_fields(text, what='header'):
    """{name: value} of 'name:value name:value ...' (a header line, or a
    PROCESS_STATE payload)."""
    fields = {}
    for token in text.split():
        name, colon, value = token.partition(':')
        if not colon or not name:
            raise BadEvent('%s token %s is not name:value in %s'
                           % (what, _shown(token, 30), _shown(text)))
        fields[name] = value
    return fields


def parse_headers(line):
    """The header line's fields, with 'len' an int."""
    headers = parse_fields(line)
    if 'len' not in headers:
        raise BadEvent('no len in header %s' % _shown(line))
    if not _LEN.match(headers['len']):
        raise BadEvent('len %s is not a count of characters' % _shown(headers['len'], 30))
    length = int(headers['len'])
    if length > MAX_PAYLOAD:
        raise BadEvent('len %d is over the %d characters this listener reads'
                       % (length, MAX_PAYLOAD))
    headers['len'] = length
    return headers


class EventReader:
    """Events from a pipe (supervisord's end of our stdin); ``fd`` is read
    with os.read, so what select says is what there is to read."""

    def __init__(self, fd, clock=time.monotonic):
        self.fd, self.clock = fd, clock
        # len counts characters (supervisor 4 measures the str it encodes).
        self.decoder = codecs.getincrementaldecoder('utf-8')('replace')
        self.text = ''
        self.eof = False

    def _fill(self, timeout):
        """Add what arrives within ``timeout`` (None: no limit); False on
        timeout or EOF."""
        if self.eof:
            return False
        readable, _, _ = select.select([self.fd], [], [], timeout)
        if not readable:
            return False
        data = os.read(self.fd, READ_SIZE)
        self.text += self.decoder.decode(data, final=not data)
        self.eof = not data
        return bool(data)

    def next_event(self):
        """(headers, payload) of the next event, None at EOF; BadEvent when
        it cannot be framed (then its leftovers are discarded)."""
        while not self.text:
            if not self._fill(None) and self.eof:
                return None
        try:
            deadline = self.clock() + REST_WAIT
            line = self._line(deadline)
            if line is None:
                return None
            headers = parse_headers(line)
            payload = self._chars(headers['len'], deadline)
            if payload is None:
                return None
            return headers, payload
        except BadEvent:
            self._discard()
            raise

    def _line(self, deadline):
        while '\n' not in self.text:
            if len(self.text) > MAX_HEADER:
                break
            if not self._wait(deadline):
                if self.eof:
                    return None
                raise BadEvent('header line incomplete after %g s: %s'
                               % (REST_WAIT, _shown(self.text)))
        line, _, rest = self.text.partition('\n')
        if len(line) > MAX_HEADER:
            raise BadEvent('header line longer than %d characters: %s'
                           % (MAX_HEADER, _shown(line)))
        self.text = rest
        return line

    def _chars(self, count, deadline):
        while len(self.text) < count:
            if not self._wait(deadline):
                if self.eof:
                    return None
                raise BadEvent('payload incomplete after %g s: %d of %d characters'
                               % (REST_WAIT, len(self.text), count))
        payload, self.text = self.text[:count], self.text[count:]
        return payload

    def _wait(self, deadline):
        return self._fill(max(0.0, deadline - self.clock()))

    def _discard(self):
        """Drop the bad event: what arrived and what follows until a pause
        (supervisord may still be writing it), for at most REST_WAIT."""
        deadline = self.clock() + REST_WAIT
        while self._fill(QUIET) and self.clock() < deadline:
            pass
        self.text = ''
