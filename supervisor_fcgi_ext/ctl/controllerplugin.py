"""supervisorctl commands of the fcgi plugin.

    [ctlplugin:fcgi]
    supervisor.ctl_factory = supervisor_fcgi_ext.controllerplugin:make_fcgi_controllerplugin
"""

import json
import time
import xmlrpc.client

from supervisor import xmlrpc as supervisor_xmlrpc
from supervisor.supervisorctl import (ControllerPluginBase, LSBInitExitStatuses,
                                      LSBStatusExitStatuses)

from supervisor_fcgi_ext.ctl.options import (UsageError, parse_restart_args,
                                             parse_status_args)
from supervisor_fcgi_ext.ctl.report import format_pool
from supervisor_fcgi_ext.ctl import scale
from supervisor_fcgi_ext.ctl import top

__all__ = ['FcgiControllerPlugin', 'make_fcgi_controllerplugin']

# fcgi_restart drives the restart by polling, so that it can print progress:
# a deferred XML-RPC call answers only once, at the end.
POLL_INTERVAL = 0.2

NO_NAMESPACE = ('Error: supervisord has no fcgi namespace: add [rpcinterface:fcgi] '
                'to supervisord.conf and restart it')


class FcgiControllerPlugin(ControllerPluginBase):
    name = 'fcgi'

    def _proxy(self):
        return self.ctl.get_server_proxy('fcgi')

    def _call(self, method, *args):
        """One fcgi.* call; on failure None, one line said, exit status set."""
        try:
            return getattr(self._proxy(), method)(*args)
        except xmlrpc.client.Fault as e:
            if e.faultCode == supervisor_xmlrpc.Faults.UNKNOWN_METHOD:
                self.ctl.output(NO_NAMESPACE)
                self.ctl.exitstatus = LSBInitExitStatuses.NOT_INSTALLED
            elif e.faultCode == supervisor_xmlrpc.Faults.BAD_NAME and args:
                self.ctl.output('%s: ERROR (no such pool)' % args[0])
                self.ctl.exitstatus = LSBStatusExitStatuses.UNKNOWN
            else:
                self.ctl.output('%s: ERROR (%s)' % (args[0] if args else 'fcgi',
                                                    e.faultString))
                self.ctl.exitstatus = LSBInitExitStatuses.GENERIC
        except (OSError, xmlrpc.client.ProtocolError) as e:
            self.ctl.output('Error: cannot reach supervisord: %s' % e)
            self.ctl.exitstatus = LSBInitExitStatuses.GENERIC
        return None

    def _pool_statuses(self, names):
        """Status of the named pools (all when none); unknown ones are said."""
        if not names:
            return self._call('getAllPoolStatus')
        found = [self._call('getPoolStatus', name) for name in names]
        return [pool for pool in found if pool is not None]

    def _parse(self, parse, arg, usage):
        """parse(arg), or None after 'Error: <why>', the usage and status 2
        (as supervisor's own commands answer bad arguments)."""
        try:
            return parse(arg)
        except UsageError as e:
            self.ctl.output('Error: %s' % e)
            usage()
            self.ctl.exitstatus = LSBInitExitStatuses.INVALID_ARGS
            return None

    def do_fcgi_status(self, arg):
        # Arguments first: a bad command line is wrong whatever the server.
        parsed = self._parse(parse_status_args, arg, self.help_fcgi_status)
        if parsed is None or not self.ctl.upcheck():
            return
        as_json, names = parsed
        pools = self._pool_statuses(names)
        if pools is None:
            return
        if as_json:
            self.ctl.output(json.dumps(pools, indent=2, sort_keys=True))
        elif not pools and not names:
            self.ctl.output('No fcgi-program pools configured')
        elif pools:   # not an empty line after 'x: ERROR (no such pool)'
            self.ctl.output('\n\n'.join(format_pool(p) for p in pools))

    def do_fcgi_restart(self, arg):
        parsed = self._parse(parse_restart_args, arg, self.help_fcgi_restart)
        if parsed is None or not self.ctl.upcheck():
            return
        name, batch = parsed
        status = self._call('rollingRestart', name, batch, False)
        printed = 0
        while status is not None:
            for line in status['messages'][printed:]:
                self.ctl.output(line)
            printed = len(status['messages'])
            if status['state'] != 'running':
                break
            try:
                time.sleep(POLL_INTERVAL)
            except KeyboardInterrupt:
                self.ctl.output('%s: no longer watching; the restart goes on '
                                'in supervisord' % name)
                return
            status = self._call('getRestartStatus', name)
        if status is not None and status['state'] == 'failed':
            self.ctl.output('%s: ERROR (%s)' % (name, status['error']))
            self.ctl.exitstatus = LSBInitExitStatuses.GENERIC

    def do_fcgi_scale(self, arg):
        parsed = self._parse(scale.parse_scale_args, arg, self.help_fcgi_scale)
        if parsed is None or not self.ctl.upcheck():
            return
        status = self._call('setPoolSize', *parsed)
        if status is not None:
            self.ctl.output(scale.format_scale(parsed[0], status))

    def help_fcgi_scale(self):
        for line in scale.HELP:
            self.ctl.output(line)

    def do_fcgi_top(self, arg):
        parsed = self._parse(top.parse_args, arg, self.help_fcgi_top)
        if parsed is None or not self.ctl.upcheck():
            return
        first = self._pool_statuses(parsed.names)
        if first is None or len(first) < len(parsed.names):
            return    # _call said why
        top.run(self.ctl, parsed, first)

    def help_fcgi_top(self):
        for line in top.HELP:
            self.ctl.output(line)

    def help_fcgi_restart(self):
        self.ctl.output('fcgi_restart <pool> [--batch N]\tRolling restart: '
                        'replace N workers at a time (default 1);')
        self.ctl.output('\t\t\t\tthe socket stays open, no request is '
                        'refused.  After')
        self.ctl.output('\t\t\t\treread, it deploys a changed command '
                        'worker by worker.')

    def help_fcgi_status(self):
        self.ctl.output('fcgi_status\t\t\tStatus of all fcgi-program pools')
        self.ctl.output('fcgi_status <pool> [<pool> ...]\tStatus of the named pools')
        self.ctl.output('fcgi_status --json [<pool> ...]\tThe same, as JSON')


def make_fcgi_controllerplugin(controller, **config):
    return FcgiControllerPlugin(controller)
