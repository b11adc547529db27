"""The connections established on TCP listeners, by NETLINK_SOCK_DIAG dumps.

A dump costs the kernel a walk of its whole connection table: every bucket,
and every socket in it, TIME_WAIT ones included (inet_diag_dump_icsk checks
netns, state, ports and bytecode socket by socket: filters choose what comes
back, not what is walked).  About 0.3 ms on a quiet host, 5 ms with 50 000
sockets in TIME_WAIT.  So one dump answers every TCP pool of a sampling pass
(:class:`TcpDumps`: its bytecode accepts any of their ports), and sockstats
makes none while, since one that found nothing, the netns' PassiveOpens
(:func:`passive_opens`) has not moved or the listener has sent no SIGIO
(asyncwatch.py).
"""
import os
import socket
import struct

from supervisor_fcgi_ext.supervisord.netlink import SocketStatsError, query

__all__ = ['SNMP_PATH', 'HELD_TCP_STATES', 'TcpDumps', 'dump', 'listener_key',
           'passive_opens', 'port_filter']

SNMP_PATH = '/proc/net/snmp'

TCP_ESTABLISHED = 1
TCP_FIN_WAIT1 = 4
TCP_FIN_WAIT2 = 5
TCP_CLOSE_WAIT = 8
# States of a server-side TCP connection a process may still hold: the peer
# (CLOSE_WAIT) or we (FIN_WAIT after shutdown) may have half-closed it.
HELD_TCP_STATES = ((1 << TCP_ESTABLISHED) | (1 << TCP_FIN_WAIT1) |
                   (1 << TCP_FIN_WAIT2) | (1 << TCP_CLOSE_WAIT))
INET_DIAG_REQ_V2 = struct.Struct('=BBBxI48s')  # family, proto, ext, states, id
INET_DIAG_MSG_SPORT = struct.Struct('!H')      # at 4, after 4 x u8
INET_DIAG_MSG_SRC = 8                          # then dport; src[16] at 8
INET_DIAG_MSG_INODE = struct.Struct('=I')      # at 68: 4 x u8, sockid, 4 x u32
INET_DIAG_MSG_INODE_AT = 68
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
BC_OP = struct.Struct('=BBH')     # code, yes, no (byte offsets to jump)
NLA_HDR = struct.Struct('=HH')    # len, type
ADDR_SIZE = {socket.AF_INET: 4, socket.AF_INET6: 16}


def passive_opens(path=None):
    """The netns' TCP PassiveOpens counter, or None where it cannot be read."""
    try:
        fd = os.open(path or SNMP_PATH, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        names, values = [line.split() for line in data.split(b'\n')
                         if line.startswith(b'Tcp:')][:2]
        return int(values[names.index(b'PassiveOpens')])
    except (OSError, ValueError, IndexError):
        return None


def listener_key(s):
    """(family, port, local address bytes, b'' for a wildcard) of a listener."""
    host, port = s.getsockname()[:2]
    addr = socket.inet_pton(s.family, host.partition('%')[0])  # no scope id
    if not addr.strip(b'\0'):  # bound to 0.0.0.0 / :: -> any local address
        addr = b''
    return s.family, port, addr


def port_filter(ports):
    """inet_diag bytecode accepting a socket whose local port is in ``ports``.

    The kernel runs the ops in order, jumping ``yes`` or ``no`` bytes ahead; a
    socket matches when a jump lands exactly on the end, and a ``no`` of the
    last port jumps 4 bytes past it.  Each port but the last is S_GE, S_LE and
    a JMP to the end (the kernel's audit follows the ``yes`` jumps, so every
    op must be on their path: a JMP's ``yes`` is the next op, and it always
    takes ``no``).
    """
    ports = sorted(set(ports))
    size = 20 * len(ports) - 4
    out = []
    for i, port in enumerate(ports):
        left = size - 20 * i             # bytes from this port's S_GE to the end
        if i + 1 < len(ports):
            out += [BC_OP.pack(INET_DIAG_BC_S_GE, 8, 20), BC_OP.pack(0, 0, port),
                    BC_OP.pack(INET_DIAG_BC_S_LE, 8, 12), BC_OP.pack(0, 0, port),
                    BC_OP.pack(INET_DIAG_BC_JMP, 4, left - 16)]
        else:
            out += [BC_OP.pack(INET_DIAG_BC_S_GE, 8, left + 4), BC_OP.pack(0, 0, port),
                    BC_OP.pack(INET_DIAG_BC_S_LE, 8, left - 8 + 4), BC_OP.pack(0, 0, port)]
    return b''.join(out)


def dump(family, keys):
    """{key: inodes of the connections established at it (0 while in the
    accept queue)} for listener_key()s of one family, by one dump."""
    found = {key: [] for key in keys}
    bytecode = port_filter(port for _, port, _ in found)
    req = INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, HELD_TCP_STATES, b'')
    attr = NLA_HDR.pack(NLA_HDR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    size = ADDR_SIZE[family]
    for msg in query(req + attr, dump=True):
        if len(msg) < INET_DIAG_MSG_INODE_AT + INET_DIAG_MSG_INODE.size:
            continue
        port = INET_DIAG_MSG_SPORT.unpack_from(msg, 4)[0]
        addr = bytes(msg[INET_DIAG_MSG_SRC:INET_DIAG_MSG_SRC + size])
        inode = INET_DIAG_MSG_INODE.unpack_from(msg, INET_DIAG_MSG_INODE_AT)[0]
        for key in ((family, port, addr), (family, port, b'')):
            if key in found:
                found[key].append(inode)
    return found


class TcpDumps:
    """One dump for the looks of one pass at the pools (``current``: a
    loophook call), covering the listeners looked at in that pass and the one
    before; outside a pass (None) each look makes a dump of its own."""

    def __init__(self):
        self.current = None
        self.found = {}       # key: (the caller's stamp before its dump, inodes)
        self.before = set()   # keys asked in the pass before
        self.asked = set()

    def inodes(self, key, stamp, current):
        """(the stamp given before the dump that answered, the inodes at
        ``key``); ``stamp`` is what the caller read just now (counters)."""
        if current is None:
            return stamp, dump(key[0], [key])[key]
        if current != self.current:
            self.current, self.found = current, {}
            self.before, self.asked = self.asked, set()
        self.asked.add(key)
        if key not in self.found:
            keys = {k for k in self.before | {key} if k[0] == key[0] and k not in self.found}
            try:
                made = dump(key[0], keys)
            except SocketStatsError:
                if len(keys) == 1:
                    raise
                made = dump(key[0], [key])    # the others' sockets were too many
            for each, inodes in made.items():
                self.found[each] = (stamp, inodes)
        return self.found[key]
