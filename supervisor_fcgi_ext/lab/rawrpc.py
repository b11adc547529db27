"""An XML-RPC call to supervisord as raw bytes, timed, over TCP or a unix socket.

xmlrpc.client times the reply's parsing with its transfer: at 256 workers
its unmarshalling of getPoolStatus's 443 KB reply takes 35-55 ms in the
client, more than the transfer itself.  This client sends one HTTP/1.1
request, reads until Content-Length is in, and times the first and the last
byte, so supervisord's part is seen alone.
"""
from __future__ import annotations

import socket
import time
import xmlrpc.client
from dataclasses import dataclass

__all__ = ['Reply', 'connect', 'send_request', 'read_reply', 'call']


@dataclass
class Reply:
    first: float    # seconds from the request sent to the first byte back
    total: float    # ... to the reply's last byte
    body: bytes     # the XML, without the HTTP head


def connect(address, timeout=60.0):
    """A connected socket: ``address`` is a unix socket path or (host, port)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def send_request(sock, method, params=()):
    body = xmlrpc.client.dumps(tuple(params), method).encode()
    sock.sendall(b'POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n'
                 b'Content-Length: %d\r\n\r\n%s' % (len(body), body))


def _content_length(head):
    for line in head.split(b'\r\n')[1:]:
        name, _, value = line.partition(b':')
        if name.strip().lower() == b'content-length':
            return int(value)
    raise ValueError('reply without Content-Length: %r' % head[:200])


def read_reply(sock, sent_at=None):
    """Read one reply; its times count from ``sent_at`` (perf_counter)."""
    sent_at = time.perf_counter() if sent_at is None else sent_at
    data = bytearray()
    first = None
    end = None
    while end is None or len(data) < end:
        chunk = sock.recv(1 << 20)
        if first is None:
            first = time.perf_counter()
        if not chunk:
            raise ConnectionError('supervisord closed after %d bytes' % len(data))
        data += chunk
        if end is None and b'\r\n\r\n' in data:
            head, _, _ = bytes(data).partition(b'\r\n\r\n')
            end = len(head) + 4 + _content_length(head)
    head_end = data.index(b'\r\n\r\n') + 4
    return Reply(first - sent_at, time.perf_counter() - sent_at, bytes(data[head_end:]))


def call(address, method, params=(), timeout=60.0):
    """One call on a fresh connection -> Reply."""
    with connect(address, timeout) as sock:
        sent_at = time.perf_counter()
        send_request(sock, method, params)
        return read_reply(sock, sent_at)
