"""The guard's XML-RPC client: childutils' proxy, with a timeout.

supervisor's transport waits for ever; a server that accepts and never
answers would hold the event unacknowledged, and supervisord sends no more
events to a listener that has not answered.  Every call here gives up after
``timeout`` seconds (socket.timeout is an OSError: a TRANSPORT_ERROR).
"""
import http.client
import socket
import xml.parsers.expat
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

__all__ = ['TRANSPORT_ERRORS', 'POOL_ERRORS', 'TimeoutTransport', 'make_rpc', 'try_call',
           'one_line']

# The connection to supervisord failed; the next call reconnects.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)
# One answer was refused or unreadable (e.g. text XML 1.0 forbids in one
# pool's status): the next call on the same connection is fine.
POOL_ERRORS = (xmlrpc.client.Fault, xml.parsers.expat.ExpatError,
               xmlrpc.client.ResponseError)


def one_line(exc):
    """An exception as one log line: a Fault's own text, else 'Type: text'."""
    if isinstance(exc, xmlrpc.client.Fault):
        return ' '.join(exc.faultString.split())
    return '%s: %s' % (type(exc).__name__, ' '.join(str(exc).split()))


class _UnixConnection(http.client.HTTPConnection):
    """supervisor's UnixStreamHTTPConnection, but its socket has the timeout."""

    def __init__(self, path, timeout):
        super().__init__('localhost', timeout=timeout)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class TimeoutTransport(SupervisorTransport):
    def __init__(self, username, password, serverurl, timeout):
        super().__init__(username, password, serverurl)
        self.timeout = timeout
        if serverurl.startswith('unix://'):
            self._get_connection = lambda: _UnixConnection(serverurl[len('unix://'):],
                                                           timeout)
        else:
            plain = self._get_connection

            def get_connection():
                connection = plain()
                connection.timeout = timeout    # connect() passes it on
                return connection
            self._get_connection = get_connection


def make_rpc(args, environ):
    """A proxy for SUPERVISOR_SERVER_URL, each call bounded by --rpc-timeout;
    --username/--password override SUPERVISOR_USERNAME/SUPERVISOR_PASSWORD
    (supervisor sets neither)."""
    username = (args.username if args.username is not None
                else environ.get('SUPERVISOR_USERNAME'))
    password = (args.password if args.password is not None
                else environ.get('SUPERVISOR_PASSWORD'))
    transport = TimeoutTransport(username, password, environ['SUPERVISOR_SERVER_URL'],
                                 args.rpc_timeout)
    # ServerProxy wants an http URL; the transport knows where to go.
    return xmlrpc.client.ServerProxy('http://127.0.0.1', transport)


def try_call(log, what, method, *args):
    """method(*args), or None after logging why it was refused: a worker can
    end or exit between a status and the call that acts on it."""
    try:
        return method(*args)
    except POOL_ERRORS as exc:
        log('%s: %s' % (what, one_line(exc)))
        return None
