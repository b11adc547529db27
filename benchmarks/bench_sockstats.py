"""Time sockstats on a pool of forked workers sharing one listener.

Shows which part of a pool status grows with the number of workers: the
netlink dump (accepted_inodes) depends on connections, the /proc walk
(socket_inodes) on workers x fds per worker.  held_connections is what a
look at the pool costs (TCP: dump + walks; unix: walks + one lookup per
socket inode not seen before, so 'warm' passes the last call's verdicts);
'unavail' counts workers it left unavailable (a bound was hit).

    python benchmarks/bench_sockstats.py [--runs N] [--conns N] [--extra-fds N]
                                         [--workers 8,64,256]
"""
import argparse
import os
import select
import shutil
import socket
import statistics
import sys
import tempfile
import time

from supervisor_fcgi_ext.supervisord.sockstats import (
    accepted_inodes, held_connections, listener_stats, socket_inodes)


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def worker(listener, accepts, extra_fds, ready_w, release_r):
    """Child: hold `accepts` connections and some other fds until released."""
    try:
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(extra_fds)]
        held += [listener.accept()[0] for _ in range(accepts)]
        os.write(ready_w, b'x')
        os.read(release_r, 1)  # EOF when the parent closes its end
    finally:
        os._exit(0)


class Pool(object):
    """`workers` forked children that together accept `conns` connections."""

    def __init__(self, listener, workers, conns, extra_fds):
        self.listener = listener
        self.pids = []
        self.clients = []
        ready_r, ready_w = os.pipe()
        release_r, self.release_w = os.pipe()
        try:
            for i in range(workers):
                accepts = conns // workers + (i < conns % workers)
                pid = os.fork()
                if pid == 0:
                    os.close(ready_r)
                    os.close(self.release_w)
                    worker(listener, accepts, extra_fds, ready_w, release_r)
                self.pids.append(pid)
            # Connect only after forking, so no worker inherits a client.
            for _ in range(conns):
                client = socket.socket(listener.family, socket.SOCK_STREAM)
                self.clients.append(client)
                client.connect(listener.getsockname())
            self._wait_ready(ready_r, workers)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(ready_r)
            os.close(ready_w)
            os.close(release_r)

    @staticmethod
    def _wait_ready(ready_r, workers, timeout=30.0):
        deadline = time.monotonic() + timeout
        got = 0
        while got < workers:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ready_r], [], [], left)[0]:
                raise RuntimeError('%d of %d workers ready' % (got, workers))
            got += len(os.read(ready_r, workers - got))

    def close(self):
        os.close(self.release_w)
        for client in self.clients:
            client.close()
        for pid in self.pids:
            os.waitpid(pid, 0)


def fds_of(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--conns', type=int, default=256)
    parser.add_argument('--extra-fds', type=int, default=10)
    parser.add_argument('--workers', default='8,64,256',
                        help='pool sizes, comma separated')
    args = parser.parse_args()
    sizes = [int(w) for w in args.workers.split(',')]
    tmp = tempfile.mkdtemp()
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    try:
        tcp.bind(('127.0.0.1', 0))
        tcp.listen(1024)
        unix.bind(os.path.join(tmp, 'pool.sock'))
        unix.listen(1024)
        print('median of %d runs, ms' % args.runs)
        print('listener_stats  tcp %.4f  unix %.4f\n' % (
            median_ms(lambda: listener_stats(tcp), args.runs),
            median_ms(lambda: listener_stats(unix), args.runs)))
        print('%-5s %7s %6s %8s %16s %14s %10s %10s %8s' % (
            'sock', 'workers', 'conns', 'fds/wkr', 'accepted_inodes',
            'socket_inodes*', 'held cold', 'held warm', 'unavail'))
        for name, listener in (('tcp', tcp), ('unix', unix)):
            for workers in sizes:
                pool = Pool(listener, workers, args.conns, args.extra_fds)
                try:
                    pids = pool.pids
                    held = held_connections(listener, pids)
                    seen = sum(len(i) for i in held.inodes.values())
                    assert seen <= args.conns, held
                    print('%-5s %7d %6d %8d %16.3f %14.3f %10.3f %10.3f %8d' % (
                        name, workers, args.conns, fds_of(pids[0]),
                        median_ms(lambda: accepted_inodes(listener),
                                  args.runs),
                        median_ms(lambda: [socket_inodes(p) for p in pids],
                                  args.runs),
                        median_ms(lambda: held_connections(listener, pids),
                                  args.runs),
                        median_ms(lambda: held_connections(listener, pids,
                                                           held.verdicts),
                                  args.runs),
                        len(held.unavailable)))
                finally:
                    pool.close()
        print('\n* socket_inodes: all workers\' /proc/PID/fd walks together')
    finally:
        tcp.close()
        unix.close()
        shutil.rmtree(tmp)
    return 0


if __name__ == '__main__':
    sys.exit(main())
