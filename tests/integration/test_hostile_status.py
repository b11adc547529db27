"""Status stays readable whatever workers and their clients do: real
supervisord, real fcgi-worker pools, real nginx, real signals, real sockets."""
from __future__ import annotations

import json
import socket

from supervisor_fcgi_ext.lab.fcgiclient import fcgi_request
from supervisor_fcgi_ext.lab.harness import PoolSpec


def http_get_raw(port, target):
    """One HTTP/1.0 request whose request line holds ``target`` bytes as is."""
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        sock.sendall(b'GET ' + target + b' HTTP/1.0\r\nHost: localhost\r\n\r\n')
        data = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def process_uris(sup):
    return [p['request_uri'] for p in sup.rpc.fcgi.getPoolStatus('app')['processes']]


def test_uris_xml_forbids_or_terminals_obey_are_shown_escaped(supervisor_factory,
                                                               nginx_factory):
    sup = supervisor_factory([PoolSpec(numprocs=1)])
    url = sup.pool('app').socket_url
    nginx = nginx_factory(url)
    # U+FFFE as the bytes a browser would send, and as curl's %EF%BF%BE
    reply = http_get_raw(nginx.port, b'/app?\xef\xbf\xbe')
    assert reply.startswith(b'HTTP/1.1 200'), reply[:200]
    status = sup.rpc.fcgi.getPoolStatus('app')
    assert status['processes'][0]['request_uri'] == '/app?%EF%BF%BE'
    assert sup.rpc.fcgi.getAllPoolStatus()[0]['processes'][0]['request_uri'] \
        == '/app?%EF%BF%BE'
    result = sup.ctl('fcgi_status', 'app', '--json', check=True)
    assert json.loads(result.stdout)[0]['processes'][0]['request_uri'] == '/app?%EF%BF%BE'
    # a raw FastCGI client: C0 controls and an ESC sequence in REQUEST_URI
    fcgi_request(url, uri='/x?\x01\x02\x1b[2J\x1b]0;owned\x07\x7f')
    expected = '/x?%01%02%1B[2J%1B]0;owned%07%7F'
    assert process_uris(sup) == [expected]
    assert sup.rpc.fcgi.getAllPoolStatus()[0]['processes'][0]['request_uri'] == expected
    table = sup.ctl('fcgi_status', check=True).stdout
    assert '\x1b' not in table and '\x01' not in table
    assert json.loads(sup.ctl('fcgi_status', 'app', '--json', check=True).stdout)[
        0]['processes'][0]['request_uri'] == expected
