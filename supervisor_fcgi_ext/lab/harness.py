"""Run a real supervisord (with our plugin) and a real nginx in a temp dir.

Shared by the integration tests, the benchmark scripts and fcgi-experiment,
which import these names from here; the code lives by concern in
processes.py (/proc), servers.py (what both servers share),
supervisord_server.py and nginx_server.py.
"""
from supervisor_fcgi_ext.lab.nginx_server import (FASTCGI_PARAMS, Nginx, find_nginx,
                                                  nginx_upstream)
from supervisor_fcgi_ext.lab.processes import kill_session, session_processes
from supervisor_fcgi_ext.lab.servers import (HarnessError, free_port, stop_session,
                                             tail, wait_for)
from supervisor_fcgi_ext.lab.supervisord_server import (BIN_DIR, STOPWAITSECS, PoolSpec,
                                                        Supervisor, resolve_command)

__all__ = ['BIN_DIR', 'FASTCGI_PARAMS', 'HarnessError', 'Nginx', 'PoolSpec',
           'STOPWAITSECS', 'Supervisor', 'find_nginx', 'free_port', 'kill_session',
           'nginx_upstream', 'resolve_command', 'session_processes', 'stop_session',
           'tail', 'wait_for']
