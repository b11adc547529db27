"""The parts of the last status that the next may give again: work only for
what changed.

A pool polled each second (fcgi-guard, a dashboard) mostly asks about
workers whose slots have not moved; building 256 process entries and adding
256 histograms again was most of a status.  An exact process entry is a
function of its inputs alone: the process as supervisor has it, the slot
record's bytes (the same bytes object while the slot cache has not read
the record again), the baseline of a reset, the lifecycle counts and the
frozen flag; so when they are equal to last time's, the entry made then is
given again (a busy worker's with its request duration brought to now, the
one field time moves: poolstatus.process_entries).  The pool's histogram
likewise, while no exact entry was made afresh and neither the workers with
slots nor the exited workers' durations changed; and its sums over the
entries (states, counts, fairness) while every live entry is an exact one
given again.

The entries and the parts are shared between statuses while unchanged:
read-only, as every consumer of a status treats them.
"""

__all__ = ['StatusMemo']


class StatusMemo:
    """One pool's process entries and parts of its dict, with their inputs."""

    def __init__(self):
        self._last, self._made = {}, {}   # pid: (inputs, entry)
        self.fresh = 0        # exact entries made afresh in this status
        self._parts = {}      # name: (inputs, part) of the pool's dict

    def begin(self):
        """A status starts: ({pid: (inputs, entry)} of the last status, the
        same to fill for this one); pids it does not fill are forgotten."""
        self._last, self._made, self.fresh = self._made, {}, 0
        return self._last, self._made

    def part(self, name, inputs, make):
        """A part of the pool's dict (its sums, its histogram): made by
        ``make()`` unless no exact entry was made afresh and ``inputs``
        (None: none that tell) equal last time's."""
        last = self._parts.get(name)
        if self.fresh == 0 and inputs is not None and last is not None \
                and last[0] == inputs:
            return last[1]
        made = make()
        self._parts[name] = (inputs, made)
        return made
