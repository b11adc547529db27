"""The plugin's process-wide state, reset between tests: the tests make
many supervisords in one process, supervisord makes one."""
import os

from supervisor import events

from supervisor_fcgi_ext.common.scoreboard import ENV_VAR
from supervisor_fcgi_ext.supervisord import plugin

__all__ = ['forget_plugins']


def forget_plugins():
    """Close every plugin's fds and forget it, with supervisor's event
    subscriptions and the scoreboard variable it set."""
    for made in plugin._plugins.values():
        made.close_fds()
    plugin._plugins.clear()
    events.clear()
    os.environ.pop(ENV_VAR, None)
