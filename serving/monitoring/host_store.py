"""The host's monitoring store: one SQLite file its server processes share (run/monitoring/scored.sqlite).

One channel carries monitoring between a host's workers: the scored rows awaiting labels
(serving/monitoring/awaiting_labels.py: a label sent to any worker finds the row any worker scored) and
each worker's monitoring windows (serving/monitoring/host_windows.py: a read on any worker merges every
worker's counts) are tables of this one file. WAL journal, so readers never wait for a writer; writers
take turns, each write one short ``BEGIN IMMEDIATE`` transaction. A lone server without a state file
keeps the same tables in memory.

Each part opens its own connection (``open_store``) with its own tables; the file is set up under an
exclusive lock on ``<file>.lock`` because switching a new file to WAL needs it to itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from serving.contract.files import locked

# The name from when the file held only the scored rows, kept: an upgrade keeps the rows awaiting their labels.
STORE_FILE = "scored.sqlite"
BUSY_TIMEOUT_S = 30          # another worker's transaction is short: waiting this long means something is wrong


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
