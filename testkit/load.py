"""Bounded load for fault tests and benchmarks: N keep-alive clients on 127.0.0.1, every outcome kept.

Each client stops at ``max_requests`` or ``max_seconds``, whichever comes first, or when told to.

``pooled=True`` makes each client handle a kept-alive connection as pooled HTTP clients do (urllib3,
httpcore, browsers): a connection the server closed while idle is replaced before it is reused, and a
request that met such a close on a reused connection with not one byte of answer is sent once more on a
new connection (RFC 9112, 9.3.1). ``stale`` counts those; every other failure is an outcome.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    started: float          # time.monotonic() when the request was sent
    seconds: float
    status: int             # 0: no HTTP answer (refused, reset, timed out)
    version: str            # the model_version answered, or the error


@dataclass
class Load:
    port: int
    body: bytes | list[bytes]
    clients: int = 8
    max_requests: int = 20_000
    max_seconds: float = 120
    timeout: float = 30
    interval: float = 0      # > 0: each client sends on a fixed schedule, one request every this many seconds
    path: str = "/predict"
    pooled: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    stale: int = 0           # pooled: requests sent again because the server had closed the idle connection

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]

    def _client(self, index: int) -> None:
        bodies = self.body if isinstance(self.body, list) else [self.body]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        start = time.monotonic()
        deadline = start + self.max_seconds
        for n in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            if self.interval:
                self._stop.wait(max(0.0, start + n * self.interval - time.monotonic()))   # the steady rate
            t0 = time.monotonic()
            body = bodies[(index + n) % len(bodies)]
            try:
                if self.pooled and _dropped(conn):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                reused = conn.sock is not None
                try:
                    resp = self._send(conn, body)
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    if not (self.pooled and reused):
                        raise
                    self.stale += 1     # closed while idle, nothing answered: once more on a new connection
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                    resp = self._send(conn, body)
                raw = resp.read()
                version = json.loads(raw).get("model_version", "") if resp.status == 200 else ""
                self.outcomes.append(Outcome(t0, time.monotonic() - t0, resp.status, version))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.outcomes.append(Outcome(t0, time.monotonic() - t0, 0, type(exc).__name__))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        conn.close()

    def _send(self, conn: http.client.HTTPConnection, body: bytes) -> http.client.HTTPResponse:
        conn.request("POST", self.path, body=body, headers={"content-type": "application/json"})
        return conn.getresponse()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

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


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server closed (readable while no answer is due: EOF)."""
    if conn.sock is None:
        return False
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
