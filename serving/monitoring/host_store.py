"""The host's monitoring store: one SQLite file its server processes share (run/monitoring/scored.sqlite).

One channel carries monitoring between a host's workers: the scored rows awaiting labels
(serving/monitoring/awaiting_labels.py: a label sent to any worker finds the row any worker scored) and
each worker's monitoring windows (serving/monitoring/host_windows.py: a read on any worker merges every
worker's counts) are tables of this one file. WAL journal, so readers never wait for a writer; writers
take turns, each write one short ``BEGIN IMMEDIATE`` transaction. A lone server without a state file
keeps the same tables in memory.

Each part opens its own connection (``open_store``) with its own tables; the file is set up under an
exclusive lock on ``<file>.lock`` because switching a new file to WAL needs it to itself.

A write that fails for the store's sake (a full disk, an I/O error, a lock held past the busy timeout) never
takes serving down: ``WriteFaults`` keeps what failed for /health (degraded, and why) and logs one line per
part and LOG_EVERY_S; the next write that succeeds clears it. Nothing half-written stays: each write is one
transaction, rolled back when it fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from serving.contract.files import locked

# The name from when the file held only the scored rows, kept: an upgrade keeps the rows awaiting their labels.
STORE_FILE = "scored.sqlite"
BUSY_TIMEOUT_S = 30          # another worker's transaction is short: waiting this long means something is wrong
LOG_EVERY_S = 60             # a failing write is logged once this often per part (a full disk fails ten a second)
MIN_FREE_BYTES = 1 << 20     # less free space than this on the store's disk: degraded, "disk full"
STORE_ERRORS = (sqlite3.OperationalError, OSError)   # the store's own failures: disk full, I/O error, locked

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _opening(path: Path | None) -> Iterator[None]:
    """Hold ``<path>.lock`` while the store is opened and set up; nothing to hold for memory."""
    if path is None:
        yield
        return
    with locked(path.with_name(path.name + ".lock")):
        yield


def open_store(path: Path | None, schema: str) -> sqlite3.Connection:
    """A connection to the host's store at ``path`` (None: in memory) with ``schema``'s tables created.

    The connection is in autocommit mode (``transaction`` opens the writes) and may be used from any thread:
    its owner serialises the calls.
    """
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path) if path is not None else ":memory:", timeout=BUSY_TIMEOUT_S,
                         isolation_level=None, check_same_thread=False)
    try:
        with _opening(path):
            if path is not None:
                # Switching to WAL needs the file to itself, and SQLite answers "database is locked" at once,
                # without its busy timeout, while another worker opens it: the workers open it in turn.
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")    # a power cut may lose the last writes, not the file
            with transaction(db):
                for statement in schema.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (``BEGIN IMMEDIATE``: no upgrade from a read lock to deadlock on),
    committed when the block ends and rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        # A failed COMMIT must not leave the write lock held (every other worker would wait on it), and
        # SQLite may have rolled back by itself already (disk full, I/O error): then there is nothing to undo.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class WriteFaults:
    """The parts of the store (``"scored rows"``, ``"windows"``) whose last write failed, since when and why."""

    def __init__(self, path: Path | None, clock=time.monotonic) -> None:
        self.path, self.clock = path, clock
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[str, float, int]] = {}    # part -> (error, failing since, writes lost)
        self._logged: dict[str, float] = {}

    def write(self, part: str, write, *args) -> bool:
        """``write(*args)``; a failure of the store is kept and logged (at most once per LOG_EVERY_S), not raised."""
        try:
            write(*args)
        except STORE_ERRORS as exc:
            self.failed(part, exc)
            return False
        self.ok(part)
        return True

    def failed(self, part: str, exc: BaseException) -> None:
        now = self.clock()
        with self._lock:
            _, since, lost = self._failing.get(part, ("", now, 0))
            self._failing[part] = (f"{type(exc).__name__}: {exc}", since, lost + 1)
            say = now - self._logged.get(part, now - LOG_EVERY_S) >= LOG_EVERY_S
            if say:
                self._logged[part] = now
        if say:
            log.warning("monitoring: cannot write %s to %s (%s: %s), %d write(s) lost in %.0f s; serving goes on, "
                        "monitoring is degraded until a write succeeds", part, self.path, type(exc).__name__, exc,
                        lost + 1, now - since)

    def ok(self, part: str) -> None:
        if part not in self._failing:       # the common case, without the lock
            return
        with self._lock:
            gone = self._failing.pop(part, None)
            self._logged.pop(part, None)
        if gone:
            log.warning("monitoring: writing %s to %s again after %.0f s (%d write(s) lost)", part, self.path,
                        self.clock() - gone[1], gone[2])

    def reasons(self) -> list[str]:
        """For /health: the disk of the store's folder if it is full (whichever worker answers, even one with
        nothing to write), and one line per failing part."""
        now = self.clock()
        with self._lock:
            out = [f"monitoring store {self.path}: cannot write {part} for {now - since:.0f} s ({error}); "
                   f"{lost} write(s) lost, predictions still answered" for part, (error, since, lost)
                   in sorted(self._failing.items())]
        if self.path is not None:
            folder = self.path.parent.parent         # run/: the state file, monitoring/ and metrics/
            try:
                st = os.statvfs(folder)
            except OSError as exc:
                return [f"cannot read the free space of {folder}: {exc}", *out]
            if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
                out.insert(0, f"disk full: {st.f_bavail * st.f_frsize} bytes free on {folder} (the state file, "
                              "the monitoring store, the Prometheus files): predictions are answered, monitoring "
                              "records are lost until there is room")
        return out
