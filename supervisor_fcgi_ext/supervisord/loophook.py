"""A periodic call from inside supervisord's main loop, without a thread.

supervisord's smallest tick event is TICK_5, too coarse to catch a one-second
burst in a listen queue (PHP-FPM samples every second) or a one-second
connection.  Its loop polls the fds of every dispatcher in the asyncore
socket map, so a dispatcher of our own whose fd is a kernel timer (timerfd)
wakes the loop exactly every `interval` and runs our callback in the same
thread as everything it reads.  Where no timerfd can be had, the callback runs
on the loop's own passes instead (at least once a second, less regularly).

A callback may say it found nothing going on by returning True.  After
REST_AFTER such calls in a row the hook rests: its timerfd is left out of
the poll (each wake-up costs supervisord a visit of every process), and the
callback runs on the loop's own passes, about once a second; the first call
that returns anything else brings the timer back.

Whoever makes a hook closes it before supervisord closes all fds >= 5 at the
start after a reload (cleanup_fds; the plugin does it on SupervisorStoppingEvent,
which every reload passes): a number reused after that must never be read or
closed as ours, and nothing in an fd tells a timerfd from another (every
anon-inode fd has the same device, inode and mode).  `close` is idempotent.

`current_call()` says which callback call is running: what the looks of one
call read may be shared between them (one TCP dump for every pool).
"""

import ctypes
import itertools
import os
import time

from supervisor.medusa import asyncore_25 as asyncore

__all__ = ['LoopHook', 'timerfd', 'current_call']

CLOCK_MONOTONIC = 1
REST_AFTER = 4   # quiet calls in a row before a timed hook rests

_calls = itertools.count(1)
_current = [None]


def current_call():
    """A number for the hook callback running now, new at each call; None
    outside one."""
    return _current[0]


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [('it_interval', _Timespec), ('it_value', _Timespec)]


def timerfd(interval):
    """A non-blocking fd readable every `interval` seconds (Linux timerfd)."""
    if hasattr(os, 'timerfd_create'):   # Python 3.13+
        fd = os.timerfd_create(time.CLOCK_MONOTONIC,
                               flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        os.timerfd_settime(fd, initial=interval, interval=interval)
        return fd
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'timerfd_create failed')
    seconds, fraction = divmod(interval, 1.0)
    period = _Timespec(int(seconds), int(fraction * 1e9))
    spec = _Itimerspec(period, period)
    if libc.timerfd_settime(fd, 0, ctypes.byref(spec), None) < 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise OSError(errno, 'timerfd_settime failed')
    return fd


class LoopHook:
    """Call `callback()` from supervisord's loop every `interval` seconds
    (0: on every pass of the loop); resting after `rest_after` quiet calls."""

    def __init__(self, callback, interval, logger, clock=time.monotonic,
                 socket_map=None, use_timer=True, rest_after=REST_AFTER):
        self.callback = callback
        self.interval = interval
        self.logger = logger
        self.clock = clock
        self.socket_map = asyncore.socket_map if socket_map is None else socket_map
        self.due = 0.0
        self.timed = False
        self.rest_after = rest_after
        self.resting = False
        self.quiet_calls = 0
        if interval > 0 and use_timer:
            try:
                self.fd = timerfd(interval)
                self.timed = True
            except (OSError, AttributeError) as e:
                logger.warn('fcgi: no timerfd (%s): sampling on loop passes' % e)
        if not self.timed:
            # a pipe nobody writes: a key of our own that is never polled
            self.fd, self._write_fd = os.pipe()
        self.closed = False
        self.socket_map[self.fd] = self

    # -- what supervisord's loop calls ---------------------------------------

    def readable(self):
        if self.closed:
            return False
        if self.timed and not self.resting:
            return True
        if self.clock() >= self.due:
            self._call()
        return self.timed and not self.resting and not self.closed

    def writable(self):
        return False

    def handle_read_event(self):
        if self.closed:   # closed earlier in the loop pass that polled us
            return
        try:
            os.read(self.fd, 8)   # the expiry count; empties the timerfd
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self._call()

    def handle_error(self):  # supervisord calls it if handle_read_event raised
        pass

    def _call(self):
        # on loop passes, which come about once a second: a little early is
        # allowed so that a 1 s interval does not slip to 2 s
        self.due = self.clock() + self.interval * 0.9
        _current[0] = next(_calls)
        try:
            quiet = self.callback() is True
        except Exception as e:  # an exception here would kill supervisord
            self.logger.error('fcgi: sampling failed: %r' % (e,))
            quiet = False
        finally:
            _current[0] = None
        self.quiet_calls = self.quiet_calls + 1 if quiet else 0
        if self.timed and not self.closed:
            if self.resting and not quiet:
                self.resting = False
                self._drain()   # expiries counted while resting are stale
            elif not self.resting and self.quiet_calls >= self.rest_after:
                self.resting = True

    def _drain(self):
        try:
            os.read(self.fd, 8)
        except OSError:
            pass

    def close(self):
        """Leave the socket map and close our fds, once: a second call must
        not close a number someone else has been given since."""
        if self.closed:
            return
        self.closed = True
        if self.socket_map.get(self.fd) is self:
            del self.socket_map[self.fd]
        for fd in [self.fd] if self.timed else [self.fd, self._write_fd]:
            try:
                os.close(fd)
            except OSError:
                pass
