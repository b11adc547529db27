"""fcgi-guard under a real supervisord (lab/harness.py), for the tests that
run it there."""
import os
import threading
import time

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import BIN_DIR


def guarded(supervisor_factory, tmp_path, pools, args, listener_options='', **kwargs):
    """A supervisord running ``fcgi-guard ARGS``; (Supervisor, guard log path)."""
    workdir = str(tmp_path / 'sup')
    log = os.path.join(workdir, 'guard.log')
    section = ('[eventlistener:guard]\ncommand = %s %s\nevents = TICK_5,PROCESS_STATE\n'
               'buffer_size = 50\nstderr_logfile = %s\nstdout_logfile = NONE\n%s'
               % (os.path.join(BIN_DIR, 'fcgi-guard'), args, log, listener_options))
    sup = supervisor_factory(pools, workdir=workdir, extra_sections=section, **kwargs)
    return sup, log


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ''


def request_in_thread(url, uri, timeout=40):
    """Send a FastCGI request from a thread; [status or exception, end time]."""
    outcome = []

    def send():
        try:
            outcome.append(fcgi_request(url, uri=uri, timeout=timeout).status)
        except Exception as exc:
            outcome.append(exc)
        outcome.append(time.monotonic())
    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


def busy_worker(sup, pool):
    """The worker of ``pool`` the scoreboard shows running a request."""
    return sup.wait_for(lambda: [p for p in sup.rpc.fcgi.getPoolStatus(pool)['processes']
                                 if p['worker_state'] == 'running'],
                        5, 'a request running on %s' % pool)[0]
