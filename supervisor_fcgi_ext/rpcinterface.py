"""The stable name supervisord.conf uses; the namespace is supervisord/rpcinterface.py.

    [rpcinterface:fcgi]
    supervisor.rpcinterface_factory = supervisor_fcgi_ext.rpcinterface:make_fcgi_rpcinterface
"""
from supervisor_fcgi_ext.supervisord.rpcinterface import make_fcgi_rpcinterface

__all__ = ['make_fcgi_rpcinterface']
