"""The monitoring windows of the host's server processes, shared through the host's store and merged on read.

Each worker writes what its recorder holds to the ``windows`` table of ``run/monitoring/scored.sqlite``
(serving/monitoring/host_store.py: the same file as the scored rows awaiting labels), at most once every
``SHARE_EVERY_S`` and whenever a reader asks, in one short transaction:

    windows(worker, kind, start, payload, written_ns)   kind w: {version: request/row counts, histograms}
                                                                 one per monitoring window
                                                          kind l: {version: label histograms}, per label window
    workers(worker, pid, ack, at)                        ack: the last read request it answered

``worker`` is ``<pid>-<start time>``. The counts are additive, so a read sums its own windows (in memory,
flushed) with every other worker's rows. A reader first asks the others to write (``ask_others_to_share``:
a datagram with a token to each worker's socket, in Linux's abstract namespace, named after the worker; the
recorder thread waits on that socket between its batches, so it wakes at once, flushes, writes and
acknowledges the token in ``workers``: no polling while nobody reads) and waits up to ``ASK_TIMEOUT_S``:
every request a live worker answered before the read is counted, and a worker that does not acknowledge in
time is named in the answer (its rows are then at most SHARE_EVERY_S old). A dead worker's rows stay until
their windows expire, so a killed worker loses at most what it recorded in its last SHARE_EVERY_S.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from serving.contract.digest import sha256_bytes
from serving.contract.processes import alive, started_at
from serving.monitoring.host_store import STORE_FILE, open_store, transaction
from serving.workers.state import live_workers

log = logging.getLogger(__name__)

SHARE_EVERY_S = 1.0
ASK_TIMEOUT_S = 2.0
ASK_POLL_S = 0.01
KINDS = ("w", "l")          # monitoring windows, label windows

SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (worker TEXT NOT NULL, kind TEXT NOT NULL, start INTEGER NOT NULL,
                                    payload BLOB NOT NULL, written_ns INTEGER NOT NULL,
                                    PRIMARY KEY (worker, kind, start));
CREATE INDEX IF NOT EXISTS windows_start ON windows (kind, start);
CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, pid INTEGER NOT NULL, ack INTEGER NOT NULL,
                                    at REAL NOT NULL);
"""


class HostWindows:
    """One worker's view of the windows the host's workers share.

    Args:
        root: run/monitoring/ (the store is ``root/scored.sqlite``).
        me: this worker's name (``<pid>-<start time>``).
        live: the names of the workers running now (from their records in run/workers/).
    """

    def __init__(self, root: Path, me: str, live: Callable[[], set[str]]) -> None:
        self.root, self.me, self.live = root, me, live
        self.store_path = root / STORE_FILE
        self._db = open_store(self.store_path, SCHEMA)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, int], tuple[int, dict]] = {}
        with self._lock, transaction(self._db) as db:      # known (and kept) from the start, before any window
            db.execute("INSERT OR IGNORE INTO workers VALUES (?, ?, 0, ?)", (me, os.getpid(), time.time()))
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self._address(me))
        self._socket.setblocking(False)

    @classmethod
    def for_state_file(cls, state_file: Path) -> HostWindows:
        """The host's windows beside ``state_file`` (run/monitoring/), seen from this process; the live workers
        are those with a record in run/workers/ (serving/workers/state.py)."""
        def live() -> set[str]:
            return {f"{r['pid']}-{r['started_at']}" for r in live_workers(state_file)}

        pid = os.getpid()
        return cls(state_file.parent / "monitoring", f"{pid}-{started_at(pid)}", live)

    def _address(self, name: str) -> bytes:
        # Abstract namespace (a leading NUL): no file, no path-length limit, gone with the process.
        digest = sha256_bytes(f"{self.root.resolve()}/{name}".encode())[:32]
        return b"\0ml-pipeline-monitoring-" + digest.encode()

    def close(self) -> None:
        self._socket.close()
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ this worker's side
    def wait_for_ask(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` for a reader's request to share: the newest token, or None."""
        try:
            ready, _w, _x = select.select([self._socket], [], [], timeout)
        except (OSError, ValueError):          # closed
            return None
        token = None
        while ready:
            try:
                data = self._socket.recv(64)
            except (BlockingIOError, OSError):
                break
            try:
                token = max(token or 0, int(data))
            except ValueError:
                continue
        return token

    def write_mine(self, windows: dict[int, dict], labels: dict[int, dict], ack: int | None) -> None:
        """Write this worker's windows and label windows given (start -> {version: counts}) and, with ``ack``,
        acknowledge that reader's token: one transaction."""
        written = time.time_ns()
        rows = [(self.me, kind, start, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), written)
                for kind, items in zip(KINDS, (windows, labels)) for start, payload in items.items()]
        with self._lock, transaction(self._db) as db:
            db.executemany("INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?, ?)", rows)
            if ack is not None:
                db.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?)", (self.me, os.getpid(), ack,
                                                                                  time.time()))

    def delete_expired(self, window_oldest: int, label_oldest: int) -> None:
        """Delete expired windows (every worker's), and the entries of dead workers that have none left."""
        live = self.live() | {self.me}
        with self._lock, transaction(self._db) as db:
            db.execute("DELETE FROM windows WHERE (kind = 'w' AND start < ?) OR (kind = 'l' AND start < ?)",
                       (window_oldest, label_oldest))
            # A worker that is starting has no record yet: its process, named by the worker, still runs.
            gone = [(name,) for (name,) in db.execute(
                        "SELECT worker FROM workers WHERE worker NOT IN (SELECT DISTINCT worker FROM windows)")
                    if name not in live and not _running(name)]
            db.executemany("DELETE FROM workers WHERE worker = ?", gone)

    # ------------------------------------------------------------ a reader's side
    def ask_others_to_share(self, timeout: float | None = None) -> dict:
        """Ask the other live workers to write now and wait (up to ``timeout``, default ASK_TIMEOUT_S) for
        their acknowledgements: merged (the workers counted), late (the pids that did not answer), waited_s."""
        timeout = ASK_TIMEOUT_S if timeout is None else timeout
        started = time.monotonic()
        token = time.time_ns()
        others = self.live() - {self.me}
        pending = set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            for name in others:
                try:
                    out.sendto(str(token).encode(), self._address(name))
                    pending.add(name)
                except OSError:     # no socket: the process is going; counted as of its last writing
                    log.info("monitoring: worker %s did not take the request to share its windows", name)
        late = others - pending
        while pending:
            acks = self._acks()
            pending = {name for name in pending if acks.get(name, 0) < token}
            if not pending or time.monotonic() - started > timeout:
                break
            time.sleep(ASK_POLL_S)
        return {"merged": 1 + len(others), "late": sorted(int(name.split("-")[0]) for name in pending | late),
                "waited_s": round(time.monotonic() - started, 3)}

    def _acks(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT worker, ack FROM workers"))

    def known(self) -> set[str]:
        """The workers the store has an entry for (live, starting, or dead with windows not yet expired)."""
        with self._lock:
            return {name for (name,) in self._db.execute("SELECT worker FROM workers")}

    def others_windows(self, kind: str, lo: int, hi: float) -> list[tuple[int, dict]]:
        """The other workers' windows of ``kind`` (w: windows, l: label windows) whose start is in [lo, hi)."""
        with self._lock:
            found = self._db.execute("SELECT worker, start, written_ns FROM windows WHERE kind = ? AND start >= ? "
                                     "AND start < ? AND worker != ?", (kind, lo, hi, self.me)).fetchall()
            out = []
            for worker, start, written in found:
                payload = self._payload(worker, kind, start, written)
                if payload is not None:
                    out.append((start, payload))
            # Pruned under the lock: another thread's read adds to the cache under it.
            wanted = {(worker, kind, start) for worker, start, _ in found}
            for key in [k for k in self._cache if k[1] == kind and k not in wanted]:
                del self._cache[key]
        return out

    def _payload(self, worker: str, kind: str, start: int, written: int) -> dict | None:
        # A window that has ended is no longer rewritten: parsed once, then served from the cache.
        key = (worker, kind, start)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == written:
            return cached[1]
        row = self._db.execute("SELECT payload FROM windows WHERE worker = ? AND kind = ? AND start = ?",
                               key).fetchone()
        if row is None:            # expired since the first query
            return None
        try:
            payload = orjson.loads(row[0])
        except orjson.JSONDecodeError:
            log.warning("monitoring: worker %s's %s window %s unreadable; left out of this read", worker, kind, start)
            return None
        self._cache[key] = (written, payload)
        return payload


def _running(name: str) -> bool:
    """Whether the process a worker is named after (``<pid>-<start time>``) still runs."""
    pid, _, started = name.partition("-")
    return pid.isdigit() and alive(int(pid), started)
