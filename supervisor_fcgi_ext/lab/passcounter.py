"""An [rpcinterface:passes] for a real supervisord in tests and benchmarks:
counts the passes of its main loop and answers ``passes.count()``.

Every pass asks each dispatcher in the socket map whether it is readable;
ours says no (it is never polled) and counts.  ``out_buffer = N`` in the
section sets supervisor's HTTP send size back (after our plugin's section
raised it), so one run compares both.
"""
import os

from supervisor.http import deferring_http_channel
from supervisor.medusa import asyncore_25 as asyncore

__all__ = ['section', 'make_passes_rpcinterface']

SECTION = ('[rpcinterface:passes]\n'
           'supervisor.rpcinterface_factory = supervisor_fcgi_ext.lab.passcounter:'
           'make_passes_rpcinterface\n')


class PassCounter:
    def __init__(self):
        self.passes = 0
        self.fd, self._write_fd = os.pipe()   # a key of our own in the map
        asyncore.socket_map[self.fd] = self

    def readable(self):
        self.passes += 1
        return False

    def writable(self):
        return False


class PassesNamespace:
    def __init__(self, counter):
        self.counter = counter

    def count(self):
        return self.counter.passes


def section(out_buffer=None):
    """The config section; ``out_buffer`` sets supervisor's send size back."""
    return SECTION + ('' if out_buffer is None else 'out_buffer = %d\n' % out_buffer)


def make_passes_rpcinterface(supervisord, **config):
    if 'out_buffer' in config:
        deferring_http_channel.ac_out_buffer_size = int(config['out_buffer'])
    return PassesNamespace(PassCounter())
