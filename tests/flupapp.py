"""A bare flup FastCGI worker for the tests: serves the listening socket on fd 0.

Kept independent of supervisor_fcgi_ext.worker so the client and harness tests
exercise plain flup, the way any third-party worker would behave under
supervisord. Routes: / (JSON with pid, method, path, query, body), /echo (the
body back), /status/N, /headers, /stderr, /sleep?s=SECONDS.
"""
from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

from flup.server.fcgi_single import WSGIServer


def app(environ, start_response):
    path = environ.get('PATH_INFO', '')
    query = environ.get('QUERY_STRING', '')
    length = int(environ.get('CONTENT_LENGTH') or 0)
    body = environ['wsgi.input'].read(length) if length else b''
    headers = [('Content-Type', 'application/json')]
    status = '200 OK'
    if path == '/echo':
        headers = [('Content-Type', 'application/octet-stream')]
        out = body
    elif path.startswith('/status/'):
        status = '%s Custom' % path.rsplit('/', 1)[1]
        out = b'status'
    elif path == '/headers':
        headers += [('X-Test', 'one'), ('X-Test', 'two')]
        out = b'{}'
    elif path == '/stderr':
        environ['wsgi.errors'].write('oops from the app\n')
        out = b'{}'
    else:
        if path == '/sleep':
            time.sleep(float(parse_qs(query).get('s', ['1'])[0]))
        out = json.dumps({
            'pid': os.getpid(), 'method': environ['REQUEST_METHOD'],
            'path': path, 'script_name': environ.get('SCRIPT_NAME'),
            'query': query, 'body': body.decode('latin-1'),
            'server_protocol': environ.get('SERVER_PROTOCOL'),
        }).encode()
    start_response(status, headers)
    return [out]


if __name__ == '__main__':
    WSGIServer(app).run()
