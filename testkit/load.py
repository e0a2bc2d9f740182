"""The one load generator of the tests and benchmarks: N keep-alive clients, every outcome kept, and the one
percentile their figures are computed with.

``Load`` runs ``clients`` threads, each with one kept-alive ``http.client`` connection to ``host:port``.
Each client stops at ``max_requests`` (per client) or ``max_seconds``, whichever comes first, or when told
to. A request's latency is ``time.perf_counter()`` around sending it and reading its whole answer, nothing
else: the answer's ``model_version`` is parsed after the clock stops (and not at all with
``versions=False``), so the sub-millisecond figures of bench/bench_serving.py carry no client-side JSON work.

``pooled=True`` makes each client handle a kept-alive connection as pooled HTTP clients do (urllib3,
httpcore, browsers): a connection the server closed while idle is replaced before it is reused, and a
request that met such a close on a reused connection with not one byte of answer is sent once more on a
new connection (RFC 9112, 9.3.1). ``stale`` counts those; every other failure is an outcome.
"""

from __future__ import annotations

import http.client
import json
import math
import select
import threading
import time
from dataclasses import dataclass, field

JSON_HEADERS = {"content-type": "application/json"}
_NO_ANSWER = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class Outcome:
    started: float          # time.monotonic() when the request was sent
    seconds: float          # perf_counter() from sending to the last byte of the answer read
    status: int             # 0: no HTTP answer (refused, reset, timed out)
    version: str            # the model_version answered ("" with versions=False), or the error's name


@dataclass
class Load:
    port: int
    body: bytes | list[bytes]   # a list: client i sends body[(i + n) % len] as its n-th request
    clients: int = 8
    max_requests: int = 20_000  # per client
    max_seconds: float = 120
    timeout: float = 30
    interval: float = 0      # > 0: each client sends on a fixed schedule, one request every this many seconds
    path: str = "/predict"
    pooled: bool = False
    host: str = "127.0.0.1"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    versions: bool = True    # read each 200 answer's model_version (a JSON parse, after the clock stops)
    outcomes: list[Outcome] = field(default_factory=list)
    stale: int = 0           # pooled: requests sent again because the server had closed the idle connection

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        self._began = 0.0
        self._ended = [0.0] * self.clients

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _client(self, index: int) -> None:
        bodies = self.body if isinstance(self.body, list) else [self.body]
        conn = self._connect()
        start = time.monotonic()
        deadline = start + self.max_seconds
        for n in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            if self.interval:
                self._stop.wait(max(0.0, start + n * self.interval - time.monotonic()))   # the steady rate
            conn = self._one(conn, bodies[(index + n) % len(bodies)])
        conn.close()
        self._ended[index] = time.perf_counter()

    def _one(self, conn: http.client.HTTPConnection, body: bytes) -> http.client.HTTPConnection:
        """Send one request, append its outcome; returns the connection to go on with."""
        started = time.monotonic()
        t0 = time.perf_counter()
        try:
            if self.pooled and _dropped(conn):
                conn.close()
                conn = self._connect()
            reused = conn.sock is not None
            try:
                status, raw = self._send(conn, body)
            except _NO_ANSWER:
                if not (self.pooled and reused):
                    raise
                self.stale += 1     # closed while idle, nothing answered: once more on a new connection
                conn.close()
                conn = self._connect()
                status, raw = self._send(conn, body)
            seconds = time.perf_counter() - t0
            version = json.loads(raw).get("model_version", "") if status == 200 and self.versions else ""
            self.outcomes.append(Outcome(started, seconds, status, version))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.outcomes.append(Outcome(started, time.perf_counter() - t0, 0, type(exc).__name__))
            conn.close()
            conn = self._connect()
        return conn

    def _send(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        conn.request(self.method, self.path, body=body, headers=self.headers)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def __enter__(self) -> Load:
        self._began = time.perf_counter()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self) -> list[Outcome]:
        """Start the clients, let each run to its count or time bound; returns the outcomes by start time."""
        with self:
            return self.wait()

    def count(self) -> int:
        """Requests answered so far (clients append as they go; list.append is atomic)."""
        return len(self.outcomes)

    def wait(self) -> list[Outcome]:
        """Let every client run to its count or time bound, then return the outcomes."""
        for t in self._threads:
            t.join(timeout=self.max_seconds + self.timeout + 5)
        return self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        return sorted(self.outcomes, key=lambda o: o.started)

    @property
    def elapsed(self) -> float:
        """Seconds from the clients' start to the last one's end (so far, while some still run)."""
        end = max(self._ended) if all(self._ended) else time.perf_counter()
        return end - self._began

    def latencies(self, only_ok: bool = False) -> list[float]:
        """Each request's seconds (only the 200 answers' with ``only_ok``), in the order they ended."""
        return [o.seconds for o in self.outcomes if o.status == 200 or not only_ok]

    def rps(self, only_ok: bool = False) -> float:
        """Requests (only the 200 answers with ``only_ok``) per second of ``elapsed``."""
        return len(self.latencies(only_ok)) / self.elapsed if self._began else 0.0


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server closed (readable while no answer is due: EOF)."""
    if conn.sock is None:
        return False
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 60, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """One request on a connection of its own (an admin call, a health probe): its status and body.

    Raises:
        OSError, http.client.HTTPException: no answer (refused, reset, timed out).
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={**JSON_HEADERS, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank: the smallest value with at least ``q`` % of the values at or
    below it (numpy's ``method="inverted_cdf"``; Hyndman and Fan's definition 1).

    Always a value that was observed, never an interpolation between two: a p99 is a latency some request
    had. ``q`` = 0 gives the smallest, 100 the largest; an empty list gives NaN. Every latency figure of
    the tests and benchmarks is computed with this function.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) / 100 - 1e-9)     # 1-based; the epsilon absorbs float noise in q * n
    return ordered[min(len(ordered), max(rank, 1)) - 1]
