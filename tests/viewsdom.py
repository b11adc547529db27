"""For the tests of the views: reads the status page's DOM (served, or from
a real browser) back into the figures it shows, to compare with
getPoolStatus; runs a real headless chromium (once per call, or live over
the DevTools pipe); sends requests to a pool while a view looks."""
import html.parser
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

from supervisor_fcgi_ext.lab.fcgiclient import FastCGIError, fcgi_request


class DOM(html.parser.HTMLParser):
    """Text of every data-field (and data-rate) element, per pool section and
    worker row; the text of elements with an id; every script's attributes."""

    def __init__(self, page):
        super().__init__()
        self.pools, self.rows, self.classes, self.rates = {}, {}, {}, {}
        self.ids, self.scripts, self.errors = {}, [], []
        self.pool = self.pid = self.target = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'section':
            self.pool = attrs['data-pool']
            self.pools[self.pool] = {}
        if tag == 'tr' and 'data-pid' in attrs:
            self.pid = int(attrs['data-pid'])
            self.rows[self.pid] = {}
            self.classes[self.pid] = attrs['class'].split()
        where = self.rows[self.pid] if self.pid is not None else self.pools.get(self.pool)
        if 'data-field' in attrs:
            self.target = (where, attrs['data-field'])
            where[attrs['data-field']] = ''
        elif 'data-rate' in attrs:
            key = (self.pool, self.pid, attrs['data-rate'])
            self.target = (self.rates, key)
        elif 'id' in attrs:
            self.target = (self.ids, attrs['id'])
        elif tag == 'p' and attrs.get('class') == 'error':
            self.target = (self.errors, None)
        if tag == 'script':
            self.scripts.append(attrs)

    def handle_endtag(self, tag):
        self.target = None
        if tag in ('tr', 'table'):
            self.pid = None

    def handle_data(self, data):
        if self.target is None:
            return
        where, key = self.target
        if key is None:
            where.append(data)
        else:
            where[key] = where.get(key, '') + data


# -- a real headless chromium ------------------------------------------------

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync']
NO_SCRIPT = '--blink-settings=scriptEnabled=false'


def find_chromium():
    for path in (os.environ.get('CHROMIUM'), shutil.which('chromium'),
                 '/usr/bin/chromium', shutil.which('chromium-browser')):
        if path and os.access(path, os.X_OK):
            return path
    return None


def png_size(data):
    """(width, height) of PNG bytes; ValueError when they are not a PNG."""
    if data[:8] != b'\x89PNG\r\n\x1a\n' or data[12:16] != b'IHDR':
        raise ValueError('not a PNG')
    return struct.unpack('>II', data[16:24])


class Chromium:
    """Runs chromium once per call, each time in a fresh profile directory."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir

    def _argv(self, *extra):
        profile = tempfile.mkdtemp(prefix='profile-', dir=self.workdir)
        return [self.binary] + CHROMIUM_FLAGS + ['--user-data-dir=' + profile] + list(extra)

    def dump_dom(self, url, script=True, budget_ms=5000):
        """The DOM after the page ran ``budget_ms`` of (virtual) time; with
        scripting off, read over DevTools (--dump-dom needs scripting)."""
        if not script:
            browser = DevTools(self, script=False)
            try:
                return browser.load(url)
            finally:
                browser.close()
        result = subprocess.run(self._argv('--virtual-time-budget=%d' % budget_ms,
                                           '--dump-dom', url),
                                capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    def screenshot(self, url, path, width, height, budget_ms=5000):
        result = subprocess.run(
            self._argv('--virtual-time-budget=%d' % budget_ms, '--hide-scrollbars',
                       '--screenshot=' + path, '--window-size=%d,%d' % (width, height),
                       url), capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr[-2000:]
        with open(path, 'rb') as f:
            return f.read()


# chromium's end of the pipe must be fds 3 (commands) and 4 (replies)
_ON_FDS_3_AND_4 = """import os, sys
r, w = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2]))
os.dup2(r, 3)
os.dup2(w, 4)
os.set_inheritable(3, True)   # dup2 onto itself keeps dup's close-on-exec
os.set_inheritable(4, True)
os.execv(sys.argv[3], sys.argv[3:])"""


class DevTools:
    """One live chromium page driven over --remote-debugging-pipe (the
    DevTools protocol, NUL-terminated JSON on fds 3 and 4): stdlib only."""

    def __init__(self, chromium, width=1200, height=800, script=True):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        flags = ['--remote-debugging-pipe', '--window-size=%d,%d' % (width, height)]
        argv = chromium._argv(*flags + ([] if script else [NO_SCRIPT]), 'about:blank')
        self.proc = subprocess.Popen(
            [sys.executable, '-c', _ON_FDS_3_AND_4, str(to_child_r), str(from_child_w)]
            + argv, pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buffer = b''
        self.events = []
        self.next_id = 0
        self.session = None
        targets = self.call('Target.getTargets')['targetInfos']
        page = [t for t in targets if t['type'] == 'page'][0]
        self.session = self.call('Target.attachToTarget', targetId=page['targetId'],
                                 flatten=True)['sessionId']
        self.call('Page.enable')
        # a headless window is at least 500 px wide: emulate the screen asked for
        self.call('Emulation.setDeviceMetricsOverride', width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 500)

    def call(self, method, **params):
        self.next_id += 1
        message = {'id': self.next_id, 'method': method, 'params': params}
        if self.session:
            message['sessionId'] = self.session
        os.write(self.to_child, json.dumps(message).encode() + b'\0')
        while True:
            reply = self._read()
            if reply.get('id') == self.next_id:
                if 'error' in reply:
                    raise RuntimeError('%s: %s' % (method, reply['error']))
                return reply['result']
            self.events.append(reply.get('method'))

    def _read(self, timeout=60):
        while b'\0' not in self.buffer:
            if not select.select([self.from_child], [], [], timeout)[0]:
                raise RuntimeError('chromium said nothing for %gs' % timeout)
            chunk = os.read(self.from_child, 65536)
            if not chunk:
                raise RuntimeError('chromium closed the DevTools pipe')
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b'\0')
        return json.loads(message)

    def open(self, url):
        self.call('Page.navigate', url=url)

    def load(self, url):
        """Open url and return its HTML once loaded, read without a script."""
        self.events = []
        self.open(url)
        while 'Page.loadEventFired' not in self.events:
            self.events.append(self._read().get('method'))
        root = self.call('DOM.getDocument')['root']['nodeId']
        return self.call('DOM.getOuterHTML', nodeId=root)['outerHTML']

    def evaluate(self, expression):
        result = self.call('Runtime.evaluate', expression=expression, returnByValue=True)
        return result['result'].get('value')

    def dom(self):
        return self.evaluate('document.documentElement.outerHTML') or ''

    def wait(self, predicate, timeout, what):
        """The DOM (a DOM object) once predicate(DOM) holds."""
        deadline = time.monotonic() + timeout
        while True:
            dom = DOM(self.dom())
            if predicate(dom):
                return dom
            if time.monotonic() > deadline:
                raise AssertionError('timed out after %gs waiting for %s; page: %s'
                                     % (timeout, what, dom.ids))
            time.sleep(0.2)

    def close(self):
        os.close(self.to_child)
        os.close(self.from_child)
        self.proc.kill()
        self.proc.wait(10)


# -- requests while a view looks ---------------------------------------------

class Traffic:
    """Requests one after another to a pool socket until stopped."""

    def __init__(self, url, uri='/load'):
        self.url = url
        self.uri = uri
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            try:
                fcgi_request(self.url, uri=self.uri, timeout=10)
            except (FastCGIError, OSError):   # a worker stopped by the test
                time.sleep(0.1)
            self.stopped.wait(0.01)

    def stop(self):
        self.stopped.set()
        self.thread.join(15)


def long_request(url, uri):
    """One request in a thread of its own (uri says how long: ?sleep=N)."""
    def run():
        try:
            fcgi_request(url, uri=uri, timeout=60)
        except (FastCGIError, OSError):   # the worker is stopped at teardown
            pass
    threading.Thread(target=run, daemon=True).start()
