"""Rolling restart of one fcgi pool, a batch of workers at a time.

supervisor's `restart app:*` stops every worker, then starts them again: the
socket closes in between (nginx answers 502) and the pool serves nothing
until the new workers are up.  A rolling restart stops `batch` workers
(graceful stop signal: each finishes its request in flight), starts each
again as soon as it has stopped, and takes the next batch only when all
replacements are RUNNING and accepting.  It keeps its own reference to the
pool socket throughout, so even a pool of one worker refuses nothing:
connections wait in the backlog for the replacement.

"Accepting": RUNNING (supervisor says so once startsecs have passed) and,
for a worker that writes a scoreboard slot, out of the slot's 'starting'
state.

Deploys: after `supervisorctl reread`, supervisor keeps the new config of a
changed pool aside until `update`, which stops the whole pool, removes it
and adds a new one.  A rolling restart instead starts each replacement with
its process config from the reread config (it rebinds `process.config` to
supervisor's own new config object; no config object is modified), and
makes the new group config current when the last worker is replaced, so a
later `update` finds nothing to do.  Only changes that keep the socket and
the process names can roll; others need `update`.

`step()` is called on every pass of supervisord's loop and never blocks.
"""

import time

from supervisor.datatypes import Automatic
from supervisor.process import Subprocess
from supervisor.states import ProcessStates, getProcessStateDescription

from supervisor_fcgi_ext.common import scoreboard
from supervisor_fcgi_ext.supervisord import slots

__all__ = ['RollingRestart', 'NotRollable', 'target_config']

# A RUNNING replacement whose slot still says 'starting' after this long is
# stuck loading its app: stop the rollout rather than wait forever.
ACCEPT_TIMEOUT = 60.0

_STOPPED = (ProcessStates.STOPPED, ProcessStates.EXITED, ProcessStates.FATAL)
_FAILED_START = (ProcessStates.BACKOFF, ProcessStates.FATAL,
                 ProcessStates.EXITED, ProcessStates.STOPPED)

STOPPING, STARTING = 'stopping', 'starting'


class NotRollable(Exception):
    """The reread config of the pool cannot be applied one worker at a time."""


def target_config(options, group):
    """(group config to restart with, what changed or '') for a pool.

    The reread config when it differs from the running one and can roll;
    NotRollable says why not.
    """
    current = group.config
    new = next((c for c in options.process_group_configs
                if c.name == current.name), None)
    if new is None or new == current:
        return current, ''
    if getattr(new, 'socket_config', None) is None:
        raise NotRollable('%s is no longer an [fcgi-program:x] after reread: '
                          'use supervisorctl update' % current.name)
    if new.socket_config != current.socket_config:
        raise NotRollable('socket changed from %s to %s after reread: only '
                          'supervisorctl update can move a pool to a new socket'
                          % (current.socket_config, new.socket_config))
    old_names = sorted(c.name for c in current.process_configs)
    new_names = sorted(c.name for c in new.process_configs)
    if old_names != new_names:
        raise NotRollable('numprocs or process_name changed after reread '
                          '(%d -> %d processes): use supervisorctl update'
                          % (len(old_names), len(new_names)))
    return new, ', '.join(_changed_fields(current, new))


def _changed_fields(old, new):
    changed = set()
    if old.priority != new.priority:
        changed.add('priority')
    news = {c.name: c for c in new.process_configs}
    for config in old.process_configs:
        other = news[config.name]
        for field in config.req_param_names + config.optional_param_names:
            values = (getattr(config, field, None), getattr(other, field, None))
            # supervisor's own == ignores fields not resolved yet (AUTO logs)
            if Automatic not in values and values[0] != values[1]:
                changed.add(field)
    return sorted(changed)


def check_command(pconfig):
    """Raise supervisor's own NotFound/NotExecutable/... before stopping
    anything when a replacement could not even be spawned."""
    Subprocess(pconfig).get_execv_args()


class RollingRestart:
    """One rolling restart; `state` is 'running', then 'done' or 'failed'."""

    def __init__(self, supervisord, group, batch, scoreboard_dir, logger,
                 clock=time.time, only_running=False):
        self.supervisord = supervisord
        self.group = group
        self.name = group.config.name
        self.config, self.changed = target_config(supervisord.options, group)
        self.pconfigs = {c.name: c for c in self.config.process_configs}
        for pconfig in self.pconfigs.values():
            check_command(pconfig)
        # a pool a process manager sizes: replace the workers it runs, and
        # start none it keeps stopped
        self.queue = sorted(name for name, process in group.processes.items()
                            if not only_running or process.get_state() not in _STOPPED)
        self.total = len(self.queue)
        self.batch = max(1, min(batch, len(self.queue) or 1))
        self.batches = -(-len(self.queue) // self.batch)
        self.scoreboard_dir = scoreboard_dir
        self.logger = logger
        self.clock = clock
        self.state = 'running'
        self.error = ''
        self.messages = []
        self.current = {}        # process name: (phase, when it began)
        self.replaced = 0
        self.batch_number = 0
        self.min_accepting = len(self.queue)
        self.started = clock()
        self.finished = None
        self._socket = None

    # -- life cycle ----------------------------------------------------------

    def begin(self):
        """Take our socket reference and stop the first batch."""
        if self.config is not self.group.config:
            # what supervisor's add_process_group does with a new config
            self.config.after_setuid()
        # Opens the socket if no worker has it open: it must not close
        # between the last old worker and the first new one.
        self._socket = self.group.socket_manager.get_socket()
        source = ('reread config (changed: %s)' % self.changed
                  if self.config is not self.group.config else 'current config')
        self._say('%s: rolling restart of %d workers, %d at a time, %s'
                  % (self.name, len(self.queue), self.batch, source))
        self.step()

    def step(self):
        """Advance as far as the processes' states allow; never raises."""
        if self.state != 'running':
            return
        try:
            self._step()
        except Exception as e:
            self.logger.error('fcgi: rolling restart of %s failed: %r'
                              % (self.name, e))
            self._fail('internal error: %s: %s' % (type(e).__name__, e))

    def abort(self, reason):
        if self.state == 'running':
            self._fail(reason)

    def _step(self):
        if self.supervisord.process_groups.get(self.name) is not self.group:
            return self._fail('the pool was removed or replaced (update) '
                              'during the restart')
        for name, (phase, _) in list(self.current.items()):
            process = self.group.processes[name]
            if phase == STOPPING:
                self._check_stopping(name, process)
            else:
                self._check_starting(name, process)
            if self.state != 'running':
                return
        self._count_accepting()
        if self.current:
            return
        if not self.queue:
            return self._finish()
        self.batch_number += 1
        for name in self.queue[:self.batch]:
            self._begin_process(name, self.group.processes[name])
        del self.queue[:self.batch]
        self._count_accepting()

    # -- one process -----------------------------------------------------------

    def _begin_process(self, name, process):
        state = process.get_state()
        if state in _STOPPED:
            self._say('%s: batch %d/%d: %s not running (%s), starting it'
                      % (self.name, self.batch_number, self.batches, name,
                         _state_name(process)))
            return self._start(name, process, self.clock())
        self._say('%s: batch %d/%d: stopping %s (pid %d)'
                  % (self.name, self.batch_number, self.batches, name,
                     process.pid))
        self.current[name] = (STOPPING, self.clock())
        if state != ProcessStates.STOPPING:
            process.stop()

    def _check_stopping(self, name, process):
        state = process.get_state()
        if state in _STOPPED:
            return self._start(name, process, self.current[name][1])
        if state != ProcessStates.STOPPING:
            # it exited and supervisor restarted it before we looked
            process.stop()

    def _start(self, name, process, since):
        process.config = self.pconfigs[name]
        self.current[name] = (STARTING, since)
        process.spawn()

    def _check_starting(self, name, process):
        state = process.get_state()
        if state in _FAILED_START:
            reason = process.spawnerr or 'exited'
            return self._fail(
                '%s:%s failed to start (%s: %s); rollout stopped after %d of %d '
                'workers, the others keep serving' % (
                    self.name, name, _state_name(process), reason,
                    self.replaced, len(self.pconfigs)))
        if state != ProcessStates.RUNNING:
            return
        slot_state = self._slot_state(process.pid)
        if slot_state == 'starting':
            if self.clock() - process.laststart > ACCEPT_TIMEOUT:
                self._fail('%s:%s RUNNING but still starting (scoreboard) after '
                           '%ds; rollout stopped' % (self.name, name,
                                                     ACCEPT_TIMEOUT))
            return
        since = self.current.pop(name)[1]
        self.replaced += 1
        self._say('%s: %s accepting again: pid %d (%s), %.1fs after its stop'
                  % (self.name, name, process.pid, slot_state or 'RUNNING',
                     self.clock() - since))

    def _slot_state(self, pid):
        """The slot's state, or '' for a worker that writes no slot."""
        if not self.scoreboard_dir:
            return ''
        slot = slots.read_pool(self.scoreboard_dir, self.name, [pid])[pid]
        return slot.state if isinstance(slot, scoreboard.Slot) else ''

    def _count_accepting(self):
        busy = set(self.current)
        accepting = sum(1 for name, p in self.group.processes.items()
                        if name not in busy
                        and p.get_state() == ProcessStates.RUNNING)
        self.min_accepting = min(self.min_accepting, accepting)

    # -- the end -------------------------------------------------------------

    def _finish(self):
        if self.config is not self.group.config:
            # `update` now finds the pool up to date
            self.group.config = self.config
        self.state = 'done'
        self._close()
        self._say('%s: done: %d workers replaced in %.1fs, never fewer than %d '
                  'accepting' % (self.name, self.replaced,
                                 self.finished - self.started,
                                 self.min_accepting))

    def _fail(self, error):
        self.state = 'failed'
        self.error = error
        self._close()
        self.logger.warn('fcgi: rolling restart of %s failed: %s'
                         % (self.name, error))

    def _close(self):
        self.finished = self.clock()
        self._socket = None    # the Proxy goes: supervisor's count drops

    def _say(self, line):
        self.messages.append(line)
        self.logger.info('fcgi: ' + line)

    def status(self):
        end = self.finished if self.finished is not None else self.clock()
        return {
            'name': self.name,
            'state': self.state,
            'batch': self.batch,
            'total': self.total,
            'replaced': self.replaced,
            'min_accepting': self.min_accepting,
            'changed': self.changed,
            'elapsed': round(end - self.started, 3),
            'error': self.error,
            'messages': list(self.messages),
        }


def _state_name(process):
    return getProcessStateDescription(process.get_state())
