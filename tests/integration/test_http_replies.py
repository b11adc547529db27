"""supervisor's HTTP replies with the plugin's send size (outbuffer.py), on a
real supervisord: a big reply leaves in few loop passes over both of its
servers, a stalled client costs no pass and loses nothing, many clients get
theirs whole, and tail -f (supervisorctl's and the web page's) still streams.

The big reply is supervisor's own readProcessStdoutLog of a program that
wrote 1 MiB; the passes are counted by lab/passcounter.py.
"""
import subprocess
import sys
import threading
import time
import xmlrpc.client

import pytest

from supervisor_fcgi_ext.lab import passcounter, rawrpc
from supervisor_fcgi_ext.lab.harness import Supervisor, wait_for

LOG_BYTES = 1 << 20
BIG = ('[program:big]\ncommand = %s -c "import sys, time; '
       'sys.stdout.write(\'x\' * %d); sys.stdout.flush(); time.sleep(1000)"\n'
       'startsecs = 0\nstdout_logfile_maxbytes = 0\n' % (sys.executable, LOG_BYTES))
# a numbered line every 0.1 s; every 5th carries 50 000 bytes more
TICK_SCRIPT = """import itertools, time
for i in itertools.count():
    print('line %d %s.' % (i, 'y' * (50000 if i % 5 == 0 else 0)), flush=True)
    time.sleep(0.1)
"""
READ_BIG = ('supervisor.readProcessStdoutLog', ('big', 0, LOG_BYTES))


def start(out_buffer=None, programs=BIG):
    sup = Supervisor([], unix_http_server=True,
                     extra_sections=programs + '\n' + passcounter.section(out_buffer))
    sup.start()
    return sup


def addresses(sup):
    return {'unix': sup.unix_socket_path, 'inet': ('127.0.0.1', sup.port)}


def wait_for_log(sup, name='big', size=LOG_BYTES):
    wait_for(lambda: sup.rpc.supervisor.tailProcessStdoutLog(name, 0, 0)[1] >= size,
             20, '%s to write %d bytes' % (name, size))


def passes(sup):
    return sup.rpc.passes.count()


def big_reply_intact(body):
    (log,), _ = xmlrpc.client.loads(body)
    return log == 'x' * LOG_BYTES


@pytest.fixture
def big():
    sup = start()
    try:
        wait_for_log(sup)
        yield sup
    finally:
        sup.stop()


def test_a_big_reply_leaves_in_few_passes_where_supervisor_took_one_per_4k(big):
    plain = start(out_buffer=4096)
    try:
        wait_for_log(plain)
        for sup, most, least in ((big, LOG_BYTES // (1 << 16) + 8, 0),
                                 (plain, None, LOG_BYTES // 4096)):
            for transport, address in addresses(sup).items():
                before = passes(sup)
                reply = rawrpc.call(address, *READ_BIG)
                taken = passes(sup) - before
                assert big_reply_intact(reply.body), transport
                if most is not None:
                    assert taken <= most, (transport, taken)
                else:
                    assert taken >= least, (transport, taken)
    finally:
        plain.stop()


def test_a_client_that_reads_nothing_costs_no_pass_and_loses_nothing(big):
    def idle_passes():
        before = passes(big)
        time.sleep(1.0)
        return passes(big) - before

    quiet = idle_passes()
    stalled = rawrpc.connect(big.unix_socket_path)
    try:
        rawrpc.send_request(stalled, *READ_BIG)
        time.sleep(0.5)              # supervisord fills the socket buffer
        while_stalled = idle_passes()
        assert while_stalled <= quiet + 3, (quiet, while_stalled)
        assert big.rpc.supervisor.getAPIVersion()   # others are served meanwhile
        assert big_reply_intact(rawrpc.read_reply(stalled).body)
    finally:
        stalled.close()


def test_many_clients_at_once_get_their_replies_whole(big):
    bodies = []

    def fetch(address):
        bodies.append(rawrpc.call(address, *READ_BIG).body)
    threads = [threading.Thread(target=fetch, args=(address,))
               for address in list(addresses(big).values()) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(bodies) == 8 and all(big_reply_intact(b) for b in bodies)


def numbered_lines(text):
    """{number: length of its y run} of the complete lines in ``text``."""
    found = {}
    for line in text.split('\n')[:-1]:
        words = line.split(' ')
        if len(words) == 3 and words[0] == 'line' and words[2].endswith('.'):
            found[int(words[1])] = len(words[2]) - 1
    return found


def assert_streams(arrivals):
    """``arrivals``: [(time, numbered lines seen by then)]; lines came over
    time, each once, none missing between the first and the last, the long
    ones whole."""
    seen = arrivals[-1][1]
    numbers = sorted(seen)
    assert len(numbers) >= 10, numbers
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    assert all(seen[n] == (50000 if n % 5 == 0 else 0) for n in numbers[1:])
    halfway = [t for t, lines in arrivals if len(lines) >= len(numbers) // 2][0]
    assert arrivals[-1][0] - halfway >= 0.5    # the second half came later


def collect(read, seconds):
    """Read for ``seconds``: [(time, numbered lines so far)]."""
    text, arrivals = '', []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunk = read()
        if chunk:
            text += chunk
            arrivals.append((time.monotonic(), numbered_lines(text)))
    return arrivals


@pytest.fixture
def tick(tmp_path):
    script = tmp_path / 'tick.py'
    script.write_text(TICK_SCRIPT)
    sup = start(programs='[program:tick]\ncommand = %s %s\nstartsecs = 0\n'
                         'stdout_logfile_maxbytes = 0\n' % (sys.executable, script))
    try:
        wait_for(lambda: sup.rpc.supervisor.tailProcessStdoutLog('tick', 0, 0)[1] > 0,
                 20, 'tick to write')
        yield sup
    finally:
        sup.stop()


def test_supervisorctl_tail_f_on_the_unix_socket_still_streams(tick):
    ctl = subprocess.Popen([sys.executable, '-m', 'supervisor.supervisorctl', '-c',
                            tick.conf_path, '-s', 'unix://' + tick.unix_socket_path,
                            'tail', '-f', 'tick'],
                           stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert_streams(collect(ctl.stdout.readline, 3.0))
    finally:
        ctl.kill()
        ctl.wait()


class Dechunked:
    """The body of a chunked HTTP reply, as far as it has come."""
    def __init__(self, sock):
        self.sock = sock
        self.raw = b''
        self.head = None

    def read(self):
        try:
            self.raw += self.sock.recv(1 << 16)
        except TimeoutError:
            return ''
        if self.head is None:
            if b'\r\n\r\n' not in self.raw:
                return ''
            self.head, _, self.raw = self.raw.partition(b'\r\n\r\n')
            assert b'transfer-encoding: chunked' in self.head.lower()
        body = b''
        while b'\r\n' in self.raw:
            size, _, rest = self.raw.partition(b'\r\n')
            size = int(size, 16)
            if len(rest) < size + 2:
                break
            body += rest[:size]
            self.raw = rest[size + 2:]
        return body.decode('latin-1')


def test_the_web_pages_tail_still_streams(tick):
    sock = rawrpc.connect(('127.0.0.1', tick.port), timeout=1.0)
    try:
        sock.sendall(b'GET /logtail/tick HTTP/1.1\r\nHost: localhost\r\n\r\n')
        assert_streams(collect(Dechunked(sock).read, 3.0))
    finally:
        sock.close()
