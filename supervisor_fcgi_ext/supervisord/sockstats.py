"""Linux socket introspection for a FastCGI pool's listening socket.

Everything here is plain stdlib (socket, struct, os) and talks to the kernel
directly: ``getsockopt`` for TCP listeners, NETLINK_SOCK_DIAG for unix
listeners and for the connection dumps (TCP's in tcpconns.py), ``/proc/PID/fd``
for ownership (procfds.py).
It runs inside supervisord, so nothing blocks for long (every netlink query
has a 1 s deadline), every fd opened here is closed before returning, and
every failure surfaces as one exception type, :class:`SocketStatsError`.
"""
import collections
import errno
import os
import socket
import struct
import time

from supervisor_fcgi_ext.supervisord import asyncwatch, tcpconns
from supervisor_fcgi_ext.supervisord.netlink import (
    KernelError, LimitReached, SocketStatsError, query)
from supervisor_fcgi_ext.supervisord.procfds import socket_inodes

__all__ = [
    'SocketStatsError',
    'LimitReached',
    'ListenerStats',
    'Held',
    'listener_stats',
    'accepted_inodes',
    'connections_by_pid',
    'held_connections',
]

# Bounds on the work one look at a pool does inside supervisord: a worker
# with more fds than this is not walked, and the walks and lookups of one
# look stop after WALK_BUDGET seconds; what is left is 'unavailable'.
MAX_FDS_PER_PID = 1024
WALK_BUDGET = 0.02
# A unix pool first asks for the host's established unix sockets (one dump,
# far cheaper than walking every worker): on a host with more than this many
# it walks instead, and asks again only UNIX_DUMP_RETRY looks later.
UNIX_DUMP_ENTRIES = 1024
UNIX_DUMP_RETRY = 120
_SKIP = 0   # the key in verdicts (no socket has inode 0): looks left without a dump
# A TCP pool's dump walks the kernel's whole connection table (tcpconns).
# The netns' count of passive opens (/proc/net/snmp, IPv4 and IPv6 alike)
# only grows when a connection is established to some listener, and an
# armed listener sends supervisord a SIGIO for each connection queued on it
# (asyncwatch): while either has not moved since a dump that found no
# connection at the pool's port, none can be there, and no dump is made.
_OPENS = -1    # the keys in verdicts: passive opens read before an empty dump,
_SIGNALS = -2  # and SIGIO counted before one of a listener armed before it

SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8
TCP_INFO_QUEUES = struct.Struct('=II')  # tcpi_unacked, tcpi_sacked at 24

TCP_ESTABLISHED = 1

UNIX_DIAG_REQ = struct.Struct('=BBxxIII2I')  # family, proto, states, ino, show
UNIX_DIAG_MSG = struct.Struct('=BBBxI8x')    # family, type, state, ino, cookie
UDIAG_SHOW_NAME = 0x1
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_NAME = 0
UNIX_DIAG_RQLEN = 4
TCP_LISTEN = 10
NO_COOKIE = 0xffffffff
NLA_HDR = struct.Struct('=HH')  # len, type

INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


ListenerStats = collections.namedtuple('ListenerStats', 'queue backlog drops')
Held = collections.namedtuple('Held', 'inodes unavailable verdicts')
Held.__doc__ = """What held_connections found: {pid: inodes of the pool's connections
it holds}, {pid: why its figure is unavailable}, and what the next call
may reuse (verdicts): the unix verdicts {inode: is one of the pool's
connections}, and when a dump may be spared (_SKIP, _OPENS)."""


def listener_stats(sock):
    """Return ListenerStats(queue, backlog, drops) of a listening socket.

    queue is the number of connections waiting for accept() now; the kernel
    takes backlog + 1 of them before it refuses more.  drops counts SYNs the
    TCP listener dropped (SO_MEMINFO, -1 on kernels without it).  A unix
    listener never drops: a full queue makes connect() block or fail with
    EAGAIN in the client, so its drops is always -1 (unknown, not zero).
    """
    with _Borrowed(sock) as s:
        if s.family == socket.AF_UNIX:
            return _unix_listener_stats(s)
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except OSError as e:
            raise SocketStatsError('TCP_INFO failed: %s' % e.strerror)
        if len(info) < 32 or info[0] != TCP_LISTEN:
            raise SocketStatsError('TCP_INFO: not a TCP listener')
        queue, backlog = TCP_INFO_QUEUES.unpack_from(info, 24)
        return ListenerStats(queue, backlog, _tcp_drops(s))


def accepted_inodes(sock):
    """Return the inodes of connections accepted from sock and not yet closed.

    Connections still waiting in the accept queue have no inode (0) and are
    left out, as is the listener itself; what remains is held by some process.
    """
    with _Borrowed(sock) as s:
        if s.family == socket.AF_UNIX:
            return _unix_accepted_inodes(s)
        return _tcp_accepted_inodes(s)


def connections_by_pid(sock, pids):
    """Return {pid: number of sock's accepted connections pid holds now}.

    A connection inherited by two processes counts for both; a pid whose
    figure is unavailable (a bound was hit) is left out.  This is a sample:
    a connection shorter than the sampling interval can be missed.
    """
    return {pid: len(inodes)
            for pid, inodes in held_connections(sock, pids).inodes.items()}


def held_connections(sock, pids, verdicts=None, tcp_dumps=None):
    """Held: which of sock's accepted connections each pid holds now.

    TCP: one port-filtered dump; when it is empty no /proc walk can change
    the answer, so none is made.  Unix: one dump of the host's established
    unix sockets, used as TCP's, unless the host has more than
    UNIX_DUMP_ENTRIES; then each pid's socket inodes are looked up one by
    one, and ``verdicts`` from the previous call spare the lookups of inodes
    seen before.  Workers with too many fds, and those left when WALK_BUDGET
    is spent, are unavailable.  ``tcp_dumps``: (tcpconns.TcpDumps, its pass)
    when the looks of one pass share their dump.
    """
    deadline = time.monotonic() + WALK_BUDGET
    with _Borrowed(sock) as s:
        if s.family == socket.AF_UNIX:
            verdicts = dict(verdicts or {})
            skip = verdicts.pop(_SKIP, 0)
            if not skip:
                try:
                    accepted = _unix_accepted_inodes(s, UNIX_DUMP_ENTRIES)
                except LimitReached:
                    skip = UNIX_DUMP_RETRY + 1
            if skip:
                held = _unix_held(s, pids, verdicts, deadline)
                held.verdicts[_SKIP] = skip - 1
                return held
        else:
            accepted, verdicts = _tcp_held_inodes(s, verdicts or {}, tcp_dumps)
    found, unavailable = {}, {}
    for pid in pids:
        if not accepted:   # an idle pool costs no /proc walks
            found[pid] = frozenset()
        elif time.monotonic() > deadline:
            unavailable[pid] = 'time budget of %g s spent' % WALK_BUDGET
        else:
            try:
                found[pid] = frozenset(socket_inodes(pid, MAX_FDS_PER_PID) & accepted)
            except LimitReached as e:
                unavailable[pid] = str(e)
    return Held(found, unavailable, verdicts)


class _Borrowed(object):
    """A socket object on sock's fd that never closes it, checked as listener.

    It also learns the real family from the kernel (SO_DOMAIN): flup wraps
    a unix fd 0 as AF_INET, so sock.family alone cannot be trusted.
    """

    def __init__(self, sock):
        try:
            self.fd = sock.fileno()
        except (OSError, ValueError):
            self.fd = -1
        self.sock = None

    def __enter__(self):
        if self.fd < 0:
            raise SocketStatsError('socket is closed')
        try:
            self.sock = socket.socket(fileno=self.fd)
            listening = self.sock.getsockopt(socket.SOL_SOCKET,
                                             socket.SO_ACCEPTCONN)
        except OSError as e:
            self.__exit__()
            if e.errno == errno.EBADF:
                raise SocketStatsError('socket is closed')
            raise SocketStatsError('not a usable socket: %s' % e.strerror)
        family = self.sock.family
        if family not in INET_FAMILIES + (socket.AF_UNIX,):
            self.__exit__()
            raise SocketStatsError('unsupported socket family %d' % family)
        if not listening:
            self.__exit__()
            raise SocketStatsError('socket is not listening')
        return self.sock

    def __exit__(self, *exc_info):
        if self.sock is not None:
            self.sock.detach()
            self.sock = None


def _tcp_drops(s):
    try:
        meminfo = s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
    except OSError:
        return -1
    if len(meminfo) < 4 * (SK_MEMINFO_DROPS + 1):
        return -1
    return struct.unpack_from('=I', meminfo, 4 * SK_MEMINFO_DROPS)[0]


def _tcp_held_inodes(s, memory, tcp_dumps=None):
    """(accepted inodes, the memory for the next call): no dump while the
    passive opens, or the SIGIO of a listener armed since before it, have
    not moved since one that found no connection."""
    fd = s.fileno()
    was_armed, signals = asyncwatch.armed(fd), asyncwatch.signals()
    kept = {k: memory[k] for k in (_OPENS, _SIGNALS) if k in memory}
    if was_armed and signals == memory.get(_SIGNALS):
        return set(), kept          # not even /proc/net/snmp is read
    stamp = (tcpconns.passive_opens(), signals)
    if stamp[0] is not None and stamp[0] == memory.get(_OPENS):
        return set(), kept
    if not was_armed:
        asyncwatch.arm(fd)   # from the next dump on, one without connections counts
    key = tcpconns.listener_key(s)
    if tcp_dumps is None:
        inodes = tcpconns.dump(s.family, [key])[key]
    else:
        dumps, current = tcp_dumps
        stamp, inodes = dumps.inodes(key, stamp, current)
    if inodes:
        # a connection still in the accept queue (inode 0) will be accepted
        # without another passive open or signal: only a dump with none at all
        # is remembered; a busy pool sends no signals
        asyncwatch.disarm(fd)
        return set(inodes) - {0}, {}
    return set(), dict(([(_OPENS, stamp[0])] if stamp[0] is not None else []) +
                       ([(_SIGNALS, stamp[1])] if was_armed else []))


def _tcp_accepted_inodes(s):
    key = tcpconns.listener_key(s)
    return set(tcpconns.dump(s.family, [key])[key]) - {0}


def _unix_listener_stats(s):
    req = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 1 << TCP_LISTEN,
                             os.fstat(s.fileno()).st_ino, UDIAG_SHOW_RQLEN,
                             NO_COOKIE, NO_COOKIE)
    for msg in query(req, dump=False):
        rqlen = dict(_unix_attrs(msg)).get(UNIX_DIAG_RQLEN)
        if rqlen is not None and len(rqlen) >= 8:
            queue, backlog = struct.unpack_from('=II', rqlen)
            return ListenerStats(queue, backlog, -1)
    raise SocketStatsError('sock_diag: no UNIX_DIAG_RQLEN in the reply')


def _unix_accepted_inodes(s, max_entries=None):
    name = _unix_name(s)
    req = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 1 << TCP_ESTABLISHED, 0,
                             UDIAG_SHOW_NAME, NO_COOKIE, NO_COOKIE)
    inodes = set()
    for msg in query(req, dump=True, max_entries=max_entries):
        inode = UNIX_DIAG_MSG.unpack_from(msg)[3]
        # Kernels before 5.x list still-queued embryos too, named, inode 0.
        if inode and dict(_unix_attrs(msg)).get(UNIX_DIAG_NAME) == name:
            inodes.add(inode)
    return inodes


def _unix_name(s):
    name = s.getsockname()
    if isinstance(name, str):  # a path: the kernel keeps its trailing NUL
        name = os.fsencode(name) + b'\0'
    if not name:
        raise SocketStatsError('unix listener has no address')
    return name


def _unix_held(s, pids, verdicts, deadline):
    """held_connections of a unix listener, by inode lookups."""
    name, own = _unix_name(s), os.fstat(s.fileno()).st_ino
    found, unavailable, seen = {}, {}, {}
    for pid in pids:
        try:
            if time.monotonic() > deadline:
                raise LimitReached('time budget of %g s spent' % WALK_BUDGET)
            inodes = socket_inodes(pid, MAX_FDS_PER_PID) - {own}
            for inode in inodes:
                if inode not in verdicts:
                    if time.monotonic() > deadline:
                        raise LimitReached('time budget of %g s spent' % WALK_BUDGET)
                    verdicts[inode] = _unix_is_connection(inode, name)
                seen[inode] = verdicts[inode]
        except LimitReached as e:
            unavailable[pid] = str(e)
            continue
        found[pid] = frozenset(i for i in inodes if verdicts[i])
    # A look cut short keeps what earlier looks learnt of the workers it did
    # not reach: where one lookup spends the budget (a host of 200k unix
    # sockets, loaded), dropping it would redo it at every look and never get
    # through the pool.  A complete look keeps only what is held now.
    if unavailable and len(verdicts) <= MAX_FDS_PER_PID * len(pids):
        return Held(found, unavailable, verdicts)
    return Held(found, unavailable, seen)


def _unix_is_connection(inode, name):
    """Is socket ``inode`` an established unix socket bound to ``name``
    (an accepted connection of that listener)?  Any other socket, or one
    gone since, is not."""
    req = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 1 << TCP_ESTABLISHED, inode,
                             UDIAG_SHOW_NAME, NO_COOKIE, NO_COOKIE)
    try:
        replies = query(req, dump=False)
    except KernelError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    for msg in replies:
        state, ino = UNIX_DIAG_MSG.unpack_from(msg)[2:4]
        if ino == inode and state == TCP_ESTABLISHED:
            return dict(_unix_attrs(msg)).get(UNIX_DIAG_NAME) == name
    return False


def _unix_attrs(msg):
    """Yield (type, payload bytes) of the attributes after a unix_diag_msg."""
    off = UNIX_DIAG_MSG.size
    while off + NLA_HDR.size <= len(msg):
        length, kind = NLA_HDR.unpack_from(msg, off)
        if length < NLA_HDR.size:
            return
        yield kind, bytes(msg[off + NLA_HDR.size:off + length])
        off += (length + 3) & ~3
