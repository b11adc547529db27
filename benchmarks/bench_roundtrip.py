"""What a user waits for a pool's status through a real supervisord, with
supervisor's HTTP send size (4096) and with the plugin's (outbuffer.py).

Two supervisords run side by side, each with one pool of N `sleep` workers;
"4096" has the size set back after the plugin loaded (lab/passcounter.py's
out_buffer), "plugin" keeps the plugin's (``--sizes`` compares others).  Calls alternate between them,
over the unix socket (supervisorctl's default) and inet_http_server.  Per
call, medians:

  passes   passes of supervisord's loop (each visits every process)
  cpu      supervisord's CPU time (/proc/PID/schedstat), the call's passes included
  bytes    last byte of the reply, raw socket (lab/rawrpc.py): supervisord's part
  client   the same call by xmlrpc.client: the bytes plus the client's
           unmarshalling, what a Python client (supervisorctl) feels

then `supervisorctl fcgi_status` on the unix socket (its Python start
included), and supervisord's memory with clients that send a request and
read nothing.

    python benchmarks/bench_roundtrip.py [--workers 256] [--runs 10]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

from supervisor_fcgi_ext.lab import passcounter, rawrpc
from supervisor_fcgi_ext.lab.harness import PoolSpec, Supervisor
from supervisor_fcgi_ext.supervisord.outbuffer import OUT_BUFFER

METHODS = (('getAllProcessInfo', 'supervisor.getAllProcessInfo', ()),
           ('getPoolStatus', 'fcgi.getPoolStatus', ('app',)),
           ('getAllPoolStatus', 'fcgi.getAllPoolStatus', ()))
STALLED = 8
SUPERVISORS_SIZE = 4096


def cpu_seconds(pid):
    with open('/proc/%d/schedstat' % pid) as f:
        return int(f.read().split()[0]) / 1e9


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        return int([l for l in f if l.startswith('VmRSS:')][0].split()[1])


class Side:
    """One supervisord and what is measured on it."""

    def __init__(self, label, workers, out_buffer):
        self.label = label
        self.sup = Supervisor([PoolSpec(command='sleep 1000', numprocs=workers,
                                        extra={'startsecs': 0})],
                              unix_http_server=True,
                              extra_sections=passcounter.section(out_buffer))
        self.samples = {}

    def addresses(self):
        return {'unix': self.sup.unix_socket_path,
                'inet': ('127.0.0.1', self.sup.port)}

    def passes(self, address):
        return xmlrpc.client.loads(rawrpc.call(address, 'passes.count').body)[0][0]

    def proxy(self, transport):
        """supervisorctl's own client (supervisor's transport)."""
        url = ('unix://' + self.sup.unix_socket_path if transport == 'unix'
               else self.sup.url)
        return xmlrpc.client.ServerProxy('http://127.0.0.1',
                                         transport=SupervisorTransport(None, None, url))

    def measure(self, transport, name, method, params):
        address = self.addresses()[transport]
        pid = self.sup.pid
        first = self.passes(address)   # passes.count's own: two in a row
        overhead = self.passes(address) - first
        before, cpu = self.passes(address), cpu_seconds(pid)
        reply = rawrpc.call(address, method, params)
        time.sleep(0.02)            # the pass that closes the connection
        cpu = cpu_seconds(pid) - cpu
        passes = self.passes(address) - before - overhead
        proxy = self.proxy(transport)
        call = proxy
        for part in method.split('.'):
            call = getattr(call, part)
        start = time.perf_counter()
        call(*params)
        client = time.perf_counter() - start
        self.samples.setdefault((transport, name), []).append(
            (passes, cpu * 1e3, reply.total * 1e3, client * 1e3, len(reply.body)))

    def ctl_status(self):
        start = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'supervisor.supervisorctl', '-c',
                        self.sup.conf_path, '-s', 'unix://' + self.sup.unix_socket_path,
                        'fcgi_status'], check=True, stdout=subprocess.DEVNULL)
        return (time.perf_counter() - start) * 1e3

    def stalled_growth(self):
        """supervisord's RSS growth with STALLED clients reading nothing."""
        pid = self.sup.pid
        before = rss_kib(pid)
        socks = [rawrpc.connect(self.sup.unix_socket_path) for _ in range(STALLED)]
        for sock in socks:
            rawrpc.send_request(sock, 'fcgi.getPoolStatus', ('app',))
        time.sleep(1.0)
        grown = rss_kib(pid) - before
        for sock in socks:
            sock.close()
        return grown


def median(values):
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workers', type=int, default=256)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--sizes', default='%d,plugin' % SUPERVISORS_SIZE,
                        help='the two send sizes compared (plugin: the plugin\'s own)')
    args = parser.parse_args()
    labels = args.sizes.split(',')
    sides = [Side(label, args.workers, None if label == 'plugin' else int(label))
             for label in labels]
    try:
        for side in sides:
            side.sup.start(timeout=120)
        for _ in range(args.runs):
            for transport in ('unix', 'inet'):
                for name, method, params in METHODS:
                    for side in sides:
                        side.measure(transport, name, method, params)
        ctl = [[], []]
        for _ in range(max(3, args.runs // 2)):
            for i, side in enumerate(sides):
                ctl[i].append(side.ctl_status())
        stalled = [side.stalled_growth() for side in sides]
        print('round trip at %d workers, median of %d (%d: supervisor\'s send size, '
              'plugin: %d):' % (args.workers, args.runs, SUPERVISORS_SIZE, OUT_BUFFER))
        print('  %-5s %-17s %8s %13s %22s %22s %22s' % (
            'sock', 'method', 'bytes', 'passes', 'cpu ms', 'bytes ms', 'client ms'))
        pair = '%7s %6s' % tuple(label[:7] for label in labels)
        print('  %-5s %-17s %8s %13s' % ('', '', '', pair)
              + ' %22s' % (pair + '  ratio') * 3)
        for transport in ('unix', 'inet'):
            for name, _, _ in METHODS:
                cols = [[median([s[k] for s in side.samples[(transport, name)]])
                         for side in sides] for k in range(5)]
                print('  %-5s %-17s %8d %6d %6d' % (transport, name, cols[4][1],
                                                    cols[0][0], cols[0][1])
                      + ''.join(' %7.2f %7.2f %6.2f' % (old, new, old / new)
                                for old, new in cols[1:4]), flush=True)
        print('supervisorctl fcgi_status (unix socket), median of %d: %s %.1f ms, '
              '%s %.1f ms' % (len(ctl[0]), labels[0], median(ctl[0]), labels[1],
                              median(ctl[1])))
        print('supervisord RSS growth with %d clients reading nothing: %s %d KiB, '
              '%s %d KiB' % (STALLED, labels[0], stalled[0], labels[1], stalled[1]))
    finally:
        for side in sides:
            side.sup.stop()


if __name__ == '__main__':
    main()
