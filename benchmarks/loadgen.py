"""A bounded load generator for upgrade tests and benchmarks, and the kept-alive client it uses.

Traffic goes only to the base URL it is given (127.0.0.1 in every caller). Each worker thread
stops at the deadline or after its share of the request cap, whichever comes first.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

MAX_SECONDS = 600  # hard cap whatever a caller asks


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # first few, for the report
    seconds: float = 0.0
    retried: dict[str, int] = field(default_factory=dict)  # KeepAlive.retried, summed over the threads

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def rps(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        return (f"{self.total} requests, {self.failed} failed, {self.rps:.0f} req/s, "
                f"p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms, "
                f"max {max(self.latencies, default=0) * 1000:.0f} ms"
                + (f"; sent again after an idle close: {self.retried}" if self.retried else "")
                + (f"; failures: {self.failures[:5]}" if self.failures else ""))


class KeepAlive:
    """One kept-alive HTTP/1.1 connection to `base` (http://host:port), used as HTTP clients use one.

    Browsers and urllib3 do not reuse a kept-alive connection the server has closed while it was
    idle, and a GET that meets such a close before the status line of its answer is sent once more
    on a new connection (RFC 9112 section 9.3.1): nginx closes its idle kept-alive connections, and
    each one once its answer is sent, when it reloads. Those are counted in `retried`, by what closed
    the connection. A new connection that fails, a retry that fails, or a failure after the status
    line is raised to the caller: a failure.
    """

    def __init__(self, base: str, timeout: float = 30):
        parts = urlsplit(base)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"KeepAlive takes http://host:port, not {base!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.retried: dict[str, int] = {}
        self._conn: http.client.HTTPConnection | None = None

    def _closed_by_peer(self) -> bool:
        """An idle connection with something to read has been closed by the server (EOF)."""
        sock = self._conn.sock if self._conn is not None else None
        return sock is not None and bool(select.select([sock], [], [], 0)[0])

    def _send(self, path: str) -> http.client.HTTPResponse:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn.request("GET", path)
        return self._conn.getresponse()

    def get(self, path: str) -> tuple[int, bytes]:
        """GET `path`: (status, body). Raises what failed (OSError, http.client.HTTPException)."""
        try:
            if self._closed_by_peer():
                self.close()
            reused = self._conn is not None
            try:
                response = self._send(path)
            except ConnectionError as exc:  # RemoteDisconnected, a reset, a broken pipe
                self.close()
                if not reused:
                    raise
                self.retried[type(exc).__name__] = self.retried.get(type(exc).__name__, 0) + 1
                response = self._send(path)
            return response.status, response.read()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


class Load:
    """Steady GETs on `paths` (round robin) from `threads` threads until stop() or the limits."""

    def __init__(self, base: str, paths: list[str], threads: int = 4, seconds: float = 120,
                 max_requests: int = 200_000, timeout: float = 30, check_json_key: str | None = None):
        self.base, self.paths, self.threads = base, paths, threads
        self.deadline_seconds = min(seconds, MAX_SECONDS)
        self.per_thread = max(1, max_requests // threads)
        self.timeout = timeout
        self.check_json_key = check_json_key
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._started = 0.0

    def _worker(self, index: int) -> None:
        client = KeepAlive(self.base, self.timeout)
        deadline = self._started + self.deadline_seconds
        for n in range(self.per_thread):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            path = self.paths[(n + index) % len(self.paths)]
            t0 = time.monotonic()
            error = None
            try:
                status, body = client.get(path)
                if status != 200:
                    error = f"{path}: HTTP {status}"
                elif self.check_json_key and path.endswith("ping") and self.check_json_key not in json.loads(body):
                    error = f"{path}: no {self.check_json_key} in answer"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                error = f"{path}: {type(exc).__name__}"
            elapsed = time.monotonic() - t0
            with self._lock:
                self.result.latencies.append(elapsed)
                if error:
                    self.result.failed += 1
                    if len(self.result.failures) < 20:
                        self.result.failures.append(error)
                else:
                    self.result.ok += 1
        client.close()
        with self._lock:
            for what, count in client.retried.items():
                self.result.retried[what] = self.result.retried.get(what, 0) + count

    def start(self) -> "Load":
        self._started = time.monotonic()
        for i in range(self.threads):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.timeout + 5)
        self.result.seconds = time.monotonic() - self._started
        return self.result


class SseStream(threading.Thread):
    """One SSE stream read event by event; records what arrived and whether it ended properly."""

    def __init__(self, url: str, count: int, timeout: float = 120):
        super().__init__(daemon=True)
        self.url, self.count, self.timeout = url, count, timeout
        self.messages = 0
        self.ended = False
        self.first_event_after: float | None = None
        self.hosts: set[str] = set()
        self.error: str | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            with requests.get(self.url, stream=True, timeout=self.timeout) as r:
                if r.status_code != 200:
                    self.error = f"HTTP {r.status_code}"
                    return
                for line in r.iter_lines(chunk_size=1):
                    if time.monotonic() - started > self.timeout:
                        self.error = "timed out"
                        return
                    if not line.startswith(b"data:"):
                        continue
                    event = json.loads(line[5:])
                    if self.first_event_after is None:
                        self.first_event_after = time.monotonic() - started
                    self.hosts.add(event.get("hostname", "?"))
                    if event.get("event") == "message":
                        self.messages += 1
                    elif event.get("event") == "message_end":
                        self.ended = True
        except (requests.RequestException, ValueError) as exc:
            self.error = type(exc).__name__

    @property
    def complete(self) -> bool:
        return self.ended and self.messages == self.count and self.error is None

    def describe(self) -> str:
        return (f"{self.messages}/{self.count} events, end {'seen' if self.ended else 'missing'}, "
                f"served by {sorted(self.hosts)}, error {self.error}")
