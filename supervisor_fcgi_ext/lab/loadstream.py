"""A steady stream of HTTP requests through nginx, counting what fails.

Used by the deploy benchmark and the deploy integration tests: they restart a
pool while the stream runs and compare failed requests and worst latency.

Each of `clients` threads keeps one keep-alive connection to nginx and sends
a request every `clients / rate` seconds (closed loop: a slow answer delays
that client's next request, it does not pile up more).  A request fails when
the answer is not 200 with the worker's ``ProcessId:`` body, or when the
connection to nginx breaks.
"""

import http.client
import threading
import time
from dataclasses import dataclass, field

__all__ = ['RequestStream', 'StreamResult']


@dataclass
class StreamResult:
    requests: int = 0
    failed: int = 0
    max_latency: float = 0.0
    statuses: dict = field(default_factory=dict)   # failure reason: count
    first_failure: float = 0.0     # seconds since start, 0 when none
    last_failure: float = 0.0
    duration: float = 0.0

    @property
    def rate(self):
        return self.requests / self.duration if self.duration else 0.0


class RequestStream:
    """start(); do things; stop() -> StreamResult.  Also a context manager."""

    def __init__(self, port, rate=300, clients=8, path='/', timeout=30.0):
        self.port = port
        self.interval = clients / float(rate)
        self.clients = clients
        self.path = path
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self.result = StreamResult()
        self._start = 0.0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        self._start = time.monotonic()
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.result.duration = time.monotonic() - self._start
        return self.result

    def wait_requests(self, count, timeout):
        """Block until `count` requests were answered (the stream is warm)."""
        deadline = time.monotonic() + timeout
        while self.result.requests < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.result.requests >= count

    def _client(self, n):
        conn = None
        # spread the clients' first requests over one interval
        due = time.monotonic() + self.interval * n / self.clients
        while not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            due = max(due + self.interval, time.monotonic())
            if conn is None:
                conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                                  timeout=self.timeout)
            began = time.monotonic()
            try:
                conn.request('GET', self.path)
                response = conn.getresponse()
                body = response.read()
                reason = None
                if response.status != 200 or not body.startswith(b'ProcessId:'):
                    reason = 'HTTP %d' % response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                reason = type(e).__name__
                conn.close()
                conn = None
            self._record(began, time.monotonic() - began, reason)
        if conn is not None:
            conn.close()

    def _record(self, began, latency, reason):
        with self._lock:
            result = self.result
            result.requests += 1
            result.max_latency = max(result.max_latency, latency)
            if reason is not None:
                result.failed += 1
                result.statuses[reason] = result.statuses.get(reason, 0) + 1
                at = began - self._start
                if not result.first_failure:
                    result.first_failure = at
                result.last_failure = at
