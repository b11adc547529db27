"""Which scoreboard writer is right on this CPU.

A slot is a seqlock (docs/scoreboard.rst): the odd count must be visible
before the fields, the fields before the even count.  The C writer says so
with release fences, right on every CPU.  The Python writer's stores are
plain: right only where the CPU keeps stores in program order (x86's TSO);
nothing in Python can fence them elsewhere.
"""
from __future__ import annotations

import platform

__all__ = ['stores_ordered', 'choose_writer']

# Where a CPU keeps stores in program order (TSO), as the Python writer's
# seqlock needs: nothing in Python can fence them.
_TSO_MACHINES = frozenset({'x86_64', 'amd64', 'x86', 'i386', 'i486', 'i586', 'i686'})


def stores_ordered(machine=None):
    """The CPU (``platform.machine()`` by default) keeps stores in order."""
    return (platform.machine() if machine is None else machine).lower() in _TSO_MACHINES


def choose_writer(use_c, c_built, machine=None):
    """(kind, note): kind 'C' or 'Python', or None for no scoreboard; note
    None, or one line to log (why there is none, or why the Python writer
    asked for, ``use_c`` False, is not used).

    The C writer is right everywhere (release ordering); the Python one
    only where stores keep their order.  ``c_built``: the C writer is here.
    """
    if stores_ordered(machine) and (not use_c or not c_built):
        return 'Python', None
    name = platform.machine() if machine is None else machine
    unordered = 'the Python writer is x86 only (%s does not keep stores in order)' % name
    if c_built:
        return 'C', None if use_c else unordered + ': the C writer writes it'
    return None, 'scoreboard disabled: the C writer is not built and ' + unordered
