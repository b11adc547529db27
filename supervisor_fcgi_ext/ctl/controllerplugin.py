"""supervisorctl commands of the fcgi plugin.

    [ctlplugin:fcgi]
    supervisor.ctl_factory = supervisor_fcgi_ext.controllerplugin:make_fcgi_controllerplugin
"""

import json
import shlex
import time
import xmlrpc.client

from supervisor import xmlrpc as supervisor_xmlrpc
from supervisor.supervisorctl import (ControllerPluginBase, LSBInitExitStatuses,
                                      LSBStatusExitStatuses)

from supervisor_fcgi_ext.ctl.report import format_pool

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

    def do_fcgi_status(self, arg):
        if not self.ctl.upcheck():
            return
        try:
            args = shlex.split(arg)
        except ValueError as e:
            self.ctl.output('Error: %s' % e)
            self.help_fcgi_status()
            self.ctl.exitstatus = LSBInitExitStatuses.INVALID_ARGS
            return
        as_json = '--json' in args
        names = [a for a in args if a != '--json']
        unknown_options = [a for a in names if a.startswith('-')]
        if unknown_options:
            self.ctl.output('Error: unknown option %s' % unknown_options[0])
            self.help_fcgi_status()
            self.ctl.exitstatus = LSBInitExitStatuses.INVALID_ARGS
            return
        pools = self._pool_statuses(names)
        if pools is None:
            return
        if as_json:
            self.ctl.output(json.dumps(pools, indent=2, sort_keys=True))
        elif not pools and not names:
            self.ctl.output('No fcgi-program pools configured')
        else:
            self.ctl.output('\n\n'.join(format_pool(p) for p in pools))

    def do_fcgi_restart(self, arg):
        if not self.ctl.upcheck():
            return
        parsed = self._restart_args(arg)
        if parsed is None:
            self.help_fcgi_restart()
            self.ctl.exitstatus = LSBInitExitStatuses.INVALID_ARGS
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

    def _restart_args(self, arg):
        """(pool, batch) from 'POOL [--batch N]'; None (and why) if wrong."""
        try:
            args = shlex.split(arg)
        except ValueError as e:
            self.ctl.output('Error: %s' % e)
            return None
        batch = 1
        names = []
        while args:
            word = args.pop(0)
            if word == '--batch' or word.startswith('--batch='):
                value = word[len('--batch='):] if '=' in word else \
                    (args.pop(0) if args else '')
                if not value.isdigit() or int(value) < 1:
                    self.ctl.output('Error: --batch needs a number >= 1, not %r'
                                    % value)
                    return None
                batch = int(value)
            elif word.startswith('-'):
                self.ctl.output('Error: unknown option %s' % word)
                return None
            else:
                names.append(word)
        if len(names) != 1:
            self.ctl.output('Error: fcgi_restart takes one pool name')
            return None
        return names[0], batch

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
