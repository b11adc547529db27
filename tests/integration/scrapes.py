"""Scraping /fcgi/metrics of a real supervisord from a test: HTTP over TCP or
a unix socket, basic auth, the scrape parsed by prometheus_client, and a
supervisord whose HTTP servers ask for a password."""
import base64
import http.client
import socket
import urllib.parse
import urllib.request
import xmlrpc.client

from prometheus_client.parser import text_string_to_metric_families

from supervisor_fcgi_ext.lab.harness import Supervisor, wait_for

USER, PASSWORD = 'scraper', 'pa:ss w0rd'


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__('localhost', timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def get(target, path='/fcgi/metrics', headers=None, method='GET'):
    """(status, headers, body) from 'http://127.0.0.1:N' or a unix socket path."""
    if target.startswith('http://'):
        conn = http.client.HTTPConnection(target[len('http://'):], timeout=10)
    else:
        conn = UnixHTTPConnection(target)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def basic(user, password):
    token = base64.b64encode(('%s:%s' % (user, password)).encode()).decode()
    return {'Authorization': 'Basic ' + token}


def samples(body):
    """{(name, sorted label items): value} of a Prometheus text scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(scraped, name, **labels):
    return scraped.get((name, tuple(sorted(labels.items()))))


def per_process(scraped, name='fcgi_process_requests_total'):
    return {dict(labels)['process']: v for (n, labels), v in scraped.items() if n == name}


def scrape(target, **kw):
    status, headers, body = get(target, **kw)
    assert status == 200, body
    return samples(body)


def through_nginx(nginx, count):
    for i in range(count):
        with urllib.request.urlopen('%s/n%d' % (nginx.url, i), timeout=10) as r:
            assert r.status == 200


class AuthSupervisor(Supervisor):
    """A supervisord whose HTTP servers ask for a username and password."""

    def config_text(self):
        text = super().config_text()
        creds = 'username = %s\npassword = %s\n' % (USER, PASSWORD)
        text = text.replace('port = 127.0.0.1:%d\n' % self.port,
                            'port = 127.0.0.1:%d\n%s' % (self.port, creds))
        text = text.replace('chmod = 0700\n', 'chmod = 0700\n' + creds)
        return text.replace('[supervisorctl]\n', '[supervisorctl]\n' + creds)

    def rpc_proxy(self, timeout=60.0):
        return xmlrpc.client.ServerProxy('http://%s:%s@127.0.0.1:%d/RPC2' % (
            USER, urllib.parse.quote(PASSWORD), self.port))


def wait_counted(target, total, pool='app', **kw):
    """The scrape once fcgi_pool_requests_total{pool, source="exact"} is total."""
    def counted():
        scraped = scrape(target, **kw)
        exact = value(scraped, 'fcgi_pool_requests_total', pool=pool, source='exact')
        return scraped if exact == total else None
    return wait_for(counted, 10, 'fcgi_pool_requests_total == %d' % total)
