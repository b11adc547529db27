"""One NETLINK_SOCK_DIAG exchange with the kernel, bounded in time and size.

sockstats asks its questions through :func:`query`; it runs inside
supervisord, so a query has a deadline, a dump stops at ``max_entries``
(other users' sockets can number hundreds of thousands), and every failure
is a :class:`SocketStatsError` with a one-line message.
"""
import os
import socket
import struct
import time

__all__ = ['SocketStatsError', 'KernelError', 'LimitReached', 'query', 'NETLINK_TIMEOUT',
           'MAX_DUMP_ENTRIES']

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_HDR = struct.Struct('=IHHII')  # len, type, flags, seq, pid
NETLINK_TIMEOUT = 1.0                # seconds for one whole query
RECV_SIZE = 65536                    # > the kernel's 32 KiB dump chunks
# A dump longer than this is cut: figures are then unavailable, not wrong.
MAX_DUMP_ENTRIES = 8192


class SocketStatsError(Exception):
    """Any failure to read socket figures; the message is one line."""


class KernelError(SocketStatsError):
    """The kernel refused the query; ``errno`` says why (ENOENT: no such socket)."""

    def __init__(self, message, errno):
        super().__init__(message)
        self.errno = errno


class LimitReached(SocketStatsError):
    """A bound on work inside supervisord was hit; the figure is unavailable."""


def query(payload, dump, max_entries=None):
    """Send one SOCK_DIAG_BY_FAMILY request; return the reply payloads.

    A dump comes in several datagrams and ends with NLMSG_DONE; a single
    lookup is answered by one message.  The whole exchange has a deadline.
    """
    limit = MAX_DUMP_ENTRIES if max_entries is None else max_entries
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    request = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload),
                             SOCK_DIAG_BY_FAMILY, flags, 1, 0) + payload
    deadline = time.monotonic() + NETLINK_TIMEOUT
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                           NETLINK_SOCK_DIAG)
    except OSError as e:
        raise SocketStatsError('netlink socket: %s' % e.strerror)
    replies = []
    try:
        nl.settimeout(NETLINK_TIMEOUT)
        nl.sendto(request, (0, 0))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            nl.settimeout(left)
            done = _parse_datagram(nl.recv(RECV_SIZE), replies)
            if dump and len(replies) > limit:
                raise LimitReached('sock_diag: more than %d sockets to look at'
                                   % limit)
            if done or not dump:
                return replies
    except socket.timeout:
        raise SocketStatsError('sock_diag: no answer within %.1f s'
                               % NETLINK_TIMEOUT)
    except OSError as e:
        raise SocketStatsError('sock_diag: %s' % e.strerror)
    finally:
        nl.close()


def _parse_datagram(data, replies):
    """Append the diag messages in data to replies; True once NLMSG_DONE."""
    view = memoryview(data)
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind = NLMSG_HDR.unpack_from(data, off)[:2]
        if length < NLMSG_HDR.size or off + length > len(data):
            raise SocketStatsError('sock_diag: malformed netlink reply')
        body = view[off + NLMSG_HDR.size:off + length]
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            err = struct.unpack_from('=i', body)[0] if len(body) >= 4 else 0
            if err < 0:
                raise KernelError('sock_diag: %s' % os.strerror(-err), -err)
            return True
        if kind == SOCK_DIAG_BY_FAMILY:
            replies.append(body)
        off += (length + 3) & ~3
    return False
