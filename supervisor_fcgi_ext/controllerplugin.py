"""The stable name supervisord.conf uses; the commands are ctl/controllerplugin.py.

    [ctlplugin:fcgi]
    supervisor.ctl_factory = supervisor_fcgi_ext.controllerplugin:make_fcgi_controllerplugin
"""
from supervisor_fcgi_ext.ctl.controllerplugin import make_fcgi_controllerplugin

__all__ = ['make_fcgi_controllerplugin']
