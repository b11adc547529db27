"""The `fcgi` XML-RPC namespace.

    [rpcinterface:fcgi]
    supervisor.rpcinterface_factory = supervisor_fcgi_ext.rpcinterface:make_fcgi_rpcinterface
    ;sample_interval = 0.5      ; seconds between samples of queues and connections
    ;scoreboard_dir = auto      ; auto | none | /path shared with the workers
    ;hold_sockets = true        ; keep a pool's socket open while no worker runs
"""

import functools
import inspect

from supervisor.http import NOT_DONE_YET
from supervisor.options import BadCommand, NoPermission, NotExecutable, NotFound
from supervisor.states import SupervisorStates
from supervisor.xmlrpc import Faults as SupervisorFaults
from supervisor.xmlrpc import RPCError

from supervisor_fcgi_ext import API_VERSION
from supervisor_fcgi_ext.common.faults import Faults
from supervisor_fcgi_ext.supervisord.plugin import get_plugin, is_fcgi_group
from supervisor_fcgi_ext.supervisord.poolmanagers import SizeOutOfRange
from supervisor_fcgi_ext.supervisord.rolling import NotRollable
from supervisor_fcgi_ext.supervisord.settings import parse_settings
from supervisor_fcgi_ext.supervisord.xmlmarshal import reply, xmlrpc_safe

__all__ = ['Faults', 'FcgiNamespaceRPCInterface', 'make_fcgi_rpcinterface']


def fault(code, detail):
    """An RPCError that names our own codes (supervisor would say UNKNOWN)."""
    error = RPCError(code, detail)
    for name, value in vars(Faults).items():
        if value == code and name.isupper():
            error.text = '%s: %s' % (name, detail)
    return error


def _rpc_method(method):
    """Wrong arguments are INCORRECT_PARAMETERS saying why; a bug of ours is
    a logged FAILED fault with one line, not an HTTP 500 (supervisor turns
    any TypeError into a bare INCORRECT_PARAMETERS, so none may escape)."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            signature.bind(self, *args)
        except TypeError as e:
            raise RPCError(SupervisorFaults.INCORRECT_PARAMETERS,
                           'fcgi.%s: %s' % (method.__name__, e))
        try:
            return method(self, *args)
        except RPCError:
            raise
        except Exception as e:
            reason = ' '.join(('%s: %s' % (type(e).__name__, e)).split())
            self.plugin.logger.error('fcgi.%s failed: %s' % (method.__name__, reason))
            raise RPCError(SupervisorFaults.FAILED, reason)
    return wrapper


class FcgiNamespaceRPCInterface:
    def __init__(self, supervisord, settings):
        self.supervisord = supervisord
        self.plugin = get_plugin(supervisord, settings)

    def _update(self, text):
        self.update_text = text
        mood = self.supervisord.options.mood
        if isinstance(mood, int) and mood < SupervisorStates.RUNNING:
            raise RPCError(SupervisorFaults.SHUTDOWN_STATE)

    def _get_pool(self, name):
        if not isinstance(name, str):
            raise RPCError(SupervisorFaults.BAD_NAME,
                           'pool name must be a string, not %r' % (name,))
        group = self.supervisord.process_groups.get(name)
        if group is None:
            raise RPCError(SupervisorFaults.BAD_NAME, name)
        if not is_fcgi_group(group):
            raise fault(Faults.NOT_FCGI_POOL,
                        '%s is not an [fcgi-program:x] group' % name)
        return group

    @_rpc_method
    def getAPIVersion(self):
        """ Return the version of the fcgi API

        @return string  version
        """
        self._update('getAPIVersion')
        return API_VERSION

    @_rpc_method
    def getPoolStatus(self, name):
        """ Socket figures, counters and processes of one fcgi pool

        @param string name  the [fcgi-program:x] group name
        @return struct  pool status
        """
        self._update('getPoolStatus')
        return reply(self.plugin.status(self._get_pool(name)))

    @_rpc_method
    def getAllPoolStatus(self):
        """ getPoolStatus of every fcgi pool, by name

        @return array  pool statuses
        """
        self._update('getAllPoolStatus')
        groups = self.plugin.fcgi_groups()
        return reply([self.plugin.status(groups[name]) for name in sorted(groups)])

    @_rpc_method
    def resetStatistics(self, name):
        """ Start a pool's counters and peaks afresh

        @param string name  the [fcgi-program:x] group name
        @return boolean  always true
        """
        self._update('resetStatistics')
        self.plugin.reset(self._get_pool(name))
        return True

    @_rpc_method
    def recordSlowRequest(self, name):
        """ Count a request seen running past a slowlog timeout (fcgi-guard)

        @param string name  the [fcgi-program:x] group name
        @return int  the pool's slow_requests now
        """
        self._update('recordSlowRequest')
        return self.plugin.monitor(self._get_pool(name)).record('slow_requests')

    def _get_process(self, group, process):
        """A process name of the pool (supervisor's, without the group)."""
        if not isinstance(process, str) or process not in group.processes:
            raise RPCError(SupervisorFaults.BAD_NAME, '%s:%s' % (group.config.name, process))
        return process

    @_rpc_method
    def recordTerminatedRequest(self, name, process=None):
        """ Count a request ended by stopping its worker (fcgi-guard)

        @param string name  the [fcgi-program:x] group name
        @param string process  the worker stopped (optional): a guard kill of it
        @return int  the pool's terminated_requests now
        """
        self._update('recordTerminatedRequest')
        group = self._get_pool(name)
        if process is not None:
            process = self._get_process(group, process)
        return self.plugin.monitor(group).record('terminated_requests', process)

    @_rpc_method
    def recordRecycle(self, name, process):
        """ Count a worker stopped past its request limit (fcgi-guard --max-requests)

        @param string name  the [fcgi-program:x] group name
        @param string process  the worker's process name in the pool
        @return int  the process's recycles now
        """
        self._update('recordRecycle')
        group = self._get_pool(name)
        return self.plugin.monitor(group).record_recycle(self._get_process(group, process))

    @_rpc_method
    def rollingRestart(self, name, batch=1, wait=True):
        """ Replace a pool's workers a batch at a time; the socket stays open

        Each batch is stopped gracefully and started again (with the config
        of a preceding reread, if it changed); the next batch starts when
        the replacements are RUNNING and accepting.

        @param string name  the [fcgi-program:x] group name
        @param int batch  workers replaced at a time (default 1)
        @param boolean wait  return when done (default), else at once
        @return struct  the restart's status (see getRestartStatus)
        """
        self._update('rollingRestart')
        group = self._get_pool(name)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise RPCError(SupervisorFaults.INCORRECT_PARAMETERS,
                           'batch must be a whole number >= 1, not %r' % (batch,))
        if self.plugin.running_restart(name) is not None:
            raise fault(Faults.ALREADY_RESTARTING,
                        '%s: a rolling restart is already running' % name)
        try:
            restart = self.plugin.start_restart(group, batch)
        except NotRollable as e:
            raise fault(Faults.NOT_ROLLABLE, str(e))
        except NotFound as e:
            raise RPCError(SupervisorFaults.NO_FILE, e.args[0])
        except (BadCommand, NotExecutable, NoPermission) as e:
            raise RPCError(SupervisorFaults.NOT_EXECUTABLE, e.args[0])
        except OSError as e:
            raise fault(Faults.RESTART_FAILED,
                        '%s: cannot open the pool socket: %s' % (name, e))
        if not wait:
            return xmlrpc_safe(restart.status())

        def onwait():
            # polled by supervisord's HTTP layer: look, never wait
            if restart.state == 'running':
                return NOT_DONE_YET
            if restart.state == 'failed':
                raise fault(Faults.RESTART_FAILED, restart.error)
            return xmlrpc_safe(restart.status())
        onwait.delay = 0.1
        onwait.rpcinterface = self
        return onwait

    @_rpc_method
    def setPoolSize(self, name, n):
        """ Run n of a pool's workers without restarting the running ones

        A static pool runs n workers; for a dynamic or ondemand pool n is
        the ceiling it may grow to.  Workers stopped are the idlest, with
        the graceful stop signal.  More than numprocs needs numprocs
        raised and supervisorctl update.

        @param string name  the [fcgi-program:x] group name
        @param int n  workers, from 0 to the pool's numprocs
        @return struct  pm, pm_state, target, floor, ceiling,
                        max_children_reached, spawns, stops
        """
        self._update('setPoolSize')
        group = self._get_pool(name)
        try:
            return self.plugin.managers.set_size(group, n)
        except SizeOutOfRange as e:
            raise fault(Faults.SIZE_OUT_OF_RANGE, str(e))

    @_rpc_method
    def getRestartStatus(self, name):
        """ Progress of the running, or the last, rolling restart of a pool

        @param string name  the [fcgi-program:x] group name
        @return struct  state (idle, running, done, failed), batch, total,
                        replaced, min_accepting, changed, elapsed, error,
                        messages
        """
        self._update('getRestartStatus')
        self._get_pool(name)
        restart = self.plugin.restarts.get(name)
        if restart is None:
            return {'name': name, 'state': 'idle', 'batch': 0, 'total': 0,
                    'replaced': 0, 'min_accepting': 0, 'changed': '',
                    'elapsed': 0.0, 'error': '', 'messages': []}
        return xmlrpc_safe(restart.status())


def make_fcgi_rpcinterface(supervisord, **config):
    return FcgiNamespaceRPCInterface(supervisord, parse_settings(config))
