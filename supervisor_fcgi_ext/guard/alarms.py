"""Alarms: one log line each, and --alarm-command run for it.

The command runs in the background (a slow mail server must not hold
events unacknowledged) and is killed after ALARM_COMMAND_TIMEOUT; its
output goes to the guard's log, never to stdout (the event protocol).
"""
import os
import subprocess

__all__ = ['Alarms', 'ALARM_COMMAND_TIMEOUT']

ALARM_COMMAND_TIMEOUT = 60.0


class Alarms:
    def __init__(self, command, log, stderr, clock):
        self.command, self.log, self.stderr, self.clock = command, log, stderr, clock
        self.running = []          # [(Popen, started)]

    def alarm(self, kind, pool, message, **details):
        self.log('ALARM pool %s: %s' % (pool, message))
        if not self.command:
            return
        env = dict(os.environ, FCGI_GUARD_ALARM=kind, FCGI_GUARD_POOL=pool,
                   FCGI_GUARD_MESSAGE=message)
        env.update(('FCGI_GUARD_' + k, str(v)) for k, v in details.items())
        try:
            proc = subprocess.Popen(['/bin/sh', '-c', self.command], env=env,
                                    stdin=subprocess.DEVNULL,
                                    stdout=self.stderr, stderr=self.stderr)
        except OSError as exc:
            self.log('--alarm-command failed to start: %s' % (exc.strerror or exc))
            return
        self.running.append((proc, self.clock()))

    def reap(self):
        """Log the commands that failed, kill those past their time."""
        running = []
        for proc, started in self.running:
            status = proc.poll()
            if status is None and self.clock() - started > ALARM_COMMAND_TIMEOUT:
                proc.kill()
                proc.wait()
                self.log('--alarm-command killed after %g s' % ALARM_COMMAND_TIMEOUT)
            elif status is None:
                running.append((proc, started))
            elif status:
                self.log('--alarm-command exited with status %d' % status)
        self.running = running
