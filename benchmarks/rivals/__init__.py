"""bench_worker.py's rivals: how each is found, built or installed and
started, the one nginx that passes to all of them, and wrk as the client.
(A package, not a module in benchmarks/: every script there is a benchmark.)"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from supervisor_fcgi_ext.lab.harness import Nginx
from supervisor_fcgi_ext.lab.nginx_server import FASTCGI_PARAMS, nginx_upstream
from supervisor_fcgi_ext.lab.servers import free_port

__all__ = ['OURS', 'UWSGI', 'PHP', 'C_FCGI', 'GOALS', 'Variant', 'uwsgi_variant',
           'php_variant', 'c_variant', 'BenchNginx', 'wrk_load']

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OURS = 'fcgi-worker + scoreboard'
UWSGI, PHP, C_FCGI = 'uWSGI (uwsgi_pass)', 'PHP-FPM (static)', 'C libfcgi responder'
# fcgi-worker's goal against each rival: its ratio to it at least this
GOALS = {UWSGI: 1.0, PHP: 1.0, C_FCGI: 0.95}


@dataclass
class Variant:
    argv: list
    graceful: bool = False      # stopped by TERM (else KILL: flup ignores TERM in accept)
    scoreboard: bool = False    # writes slots: counted against the answers
    arbiter: bool = False       # one process that forks its workers itself
    passing: str = 'fastcgi'    # nginx's fastcgi_pass, proxy_pass (http), uwsgi_pass, php
    address: str = None         # its own socket (URL), not the pool's on fd 0


def own_address(kind, tmp, name):
    """A socket URL of ``kind`` for a rival that binds its own."""
    if kind == 'unix':
        return 'unix://' + os.path.join(tmp, name + '.sock')
    return 'tcp://127.0.0.1:%d' % free_port()


def uwsgi_variant(tmp, kind, workers, install):
    uwsgi = os.path.join(BIN, 'uwsgi')
    if not os.access(uwsgi, os.X_OK):
        if not install:
            return 'not installed (pip install uwsgi; --no-install given)'
        print('installing uWSGI into %s (pip install uwsgi) ...' % sys.prefix, flush=True)
        done = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'uwsgi'],
                              capture_output=True, text=True)
        if done.returncode or not os.access(uwsgi, os.X_OK):
            return 'pip install uwsgi failed: %s' % (done.stderr.strip().splitlines()
                                                    or ['no uwsgi'])[-1]
    address = own_address(kind, tmp, 'uwsgi')
    bind = address[len('unix://'):] if kind == 'unix' else address[len('tcp://'):]
    return Variant([uwsgi, '--socket', bind, '--chmod-socket=666', '--master',
                    '--processes', str(workers), '--die-on-term', '--disable-logging',
                    '--need-app', '--home', sys.prefix, '--chdir', HERE, '--pythonpath', HERE,
                    '--module', 'bench_worker:sized_demo_app'],
                   graceful=True, arbiter=True, passing='uwsgi', address=address)


def php_variant(tmp, kind, workers):
    """PHP-FPM's master with its config and php_hello.php in ``tmp``, which
    its children (nobody, when run as root) can read."""
    found = [path for path in (shutil.which('php-fpm8.2'), shutil.which('php-fpm'),
                               '/usr/sbin/php-fpm8.2', '/usr/sbin/php-fpm')
             if path and os.access(path, os.X_OK)]
    if not found:
        return 'no php-fpm8.2 (apt-get install php8.2-fpm)'
    address = own_address(kind, tmp, 'php')
    shutil.copy(os.path.join(HERE, 'php_hello.php'), tmp)
    conf = os.path.join(tmp, 'php-fpm.conf')
    with open(conf, 'w') as f:
        f.write('[global]\npid = %s/php-fpm.pid\nerror_log = %s/php-fpm.log\n'
                'daemonize = no\n[bench]\nlisten = %s\nlisten.mode = 0666\n'
                'pm = static\npm.max_children = %d\n%s'
                % (tmp, tmp, address.split('://')[1], workers,
                   'user = nobody\n' if os.geteuid() == 0 else ''))
    return Variant([found[0], '-F', '-y', conf], graceful=True, arbiter=True,
                   passing='php', address=address)


def c_variant(tmp):
    cc = shutil.which('cc') or shutil.which('gcc')
    if cc is None:
        return 'no C compiler (apt-get install gcc libfcgi-dev)'
    binary = os.path.join(tmp, 'libfcgi_hello')
    built = subprocess.run([cc, '-O2', '-o', binary, os.path.join(HERE, 'libfcgi_hello.c'),
                            '-lfcgi'], capture_output=True, text=True)
    if built.returncode:
        return 'cannot build libfcgi_hello.c (apt-get install libfcgi-dev): %s' % (
            built.stderr.strip().splitlines() or ['?'])[0]
    return Variant([binary])


class BenchNginx(Nginx):
    """The harness's nginx (fastcgi_pass to the pool's socket), with one
    more server, on its own port, per other way of passing: ``extra`` is
    {passing: upstream URL}; ``ports`` {passing: port}, 'fastcgi' included."""

    def __init__(self, upstream, extra, php_script, **kwargs):
        super().__init__(upstream, **kwargs)
        self.extra, self.php_script = extra, php_script
        self.ports = {}

    @property
    def conf_text(self):
        text = super().conf_text
        self.ports['fastcgi'] = self.port
        servers = []
        for passing, url in self.extra.items():
            port = self.ports.setdefault(passing, free_port())
            target = nginx_upstream(url)
            if passing == 'http':
                lines = ['proxy_pass http://%s;' % target]
            elif passing == 'uwsgi':
                lines = FASTCGI_PARAMS.replace('fastcgi_param', 'uwsgi_param').splitlines()
                lines.append('uwsgi_pass %s;' % target)
            else:
                lines = FASTCGI_PARAMS.splitlines() + [
                    'fastcgi_param SCRIPT_FILENAME %s;' % self.php_script,
                    'fastcgi_pass %s;' % target]
            servers.append('    server {\n        listen 127.0.0.1:%d;\n        location / {\n'
                           '%s        }\n    }\n' % (port, ''.join(
                               '            %s\n' % line for line in lines)))
        # into the http block, which the harness's text ends with
        return text[:text.rindex('}')] + ''.join(servers) + '}\n'




def wrk_load(port, concurrency, seconds):
    """(requests answered, seconds) by wrk -t2 over ``concurrency`` keep-alive
    connections; RuntimeError if any answer was not 2xx."""
    done = subprocess.run(['wrk', '-t2', '-c%d' % concurrency, '-d%ds' % seconds,
                           'http://127.0.0.1:%d/' % port],
                          capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r'(\d+) requests in ([0-9.]+)(m?s)', done.stdout)
    if done.returncode or not found:
        raise RuntimeError('wrk failed: %s' % (done.stdout + done.stderr).strip())
    bad = re.search(r'Non-2xx or 3xx responses: (\d+)', done.stdout)
    if bad:
        raise RuntimeError('%s responses were not 2xx' % bad.group(1))
    elapsed = float(found.group(2)) / (1000 if found.group(3) == 'ms' else 1)
    return int(found.group(1)), elapsed
