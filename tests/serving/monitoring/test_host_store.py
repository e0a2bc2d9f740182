"""The host's monitoring store (serving/monitoring/host_store.py): one SQLite file the workers open together."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.procs import run_together

pytestmark = pytest.mark.unit


def _open_at_once(path: str, barrier, errors) -> None:
    """Open the store as a worker does: its windows' tables, then the scored rows' (each sets up the file)."""
    from serving.monitoring.awaiting_labels import AwaitingLabels
    from serving.monitoring.host_windows import HostWindows

    barrier.wait(timeout=30)
    try:
        host = HostWindows(Path(path).parent, f"{os.getpid()}-1", set)
        assert host.store_path == Path(path)
        AwaitingLabels(host.store_path, ttl_s=3600, max_rows=1000).close()
        host.close()
    except Exception as exc:          # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_workers_starting_together_all_open_the_shared_store(tmp_path):
    """gunicorn forks the workers at once and each opens run/monitoring/scored.sqlite: switching a new file
    to WAL fails at once with "database is locked" unless they take turns (it did, booting a worker out)."""
    for trial in range(3):
        path = tmp_path / f"t{trial}" / "scored.sqlite"
        path.parent.mkdir()
        exit_codes, errors = run_together(_open_at_once, 6, str(path), timeout=60)
        assert all(code == 0 for code in exit_codes)
        assert not errors, errors[0]


def test_a_commit_that_fails_leaves_no_transaction_and_no_lock_behind(tmp_path):
    """A COMMIT refused (here by a deferred foreign key; on a host, a full disk) is rolled back: the write lock
    is released for the other workers and the next transaction starts."""
    import sqlite3

    from serving.monitoring.host_store import open_store, transaction

    schema = ("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);\n"
              "CREATE TABLE IF NOT EXISTS child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    path = tmp_path / "host.sqlite"
    db = open_store(path, schema)
    db.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), transaction(db):
        db.execute("INSERT INTO child VALUES (42)")          # refused only at COMMIT
    assert not db.in_transaction
    other = sqlite3.connect(str(path), timeout=0.5, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")                           # the write lock is free
    other.execute("ROLLBACK")
    other.close()
    with transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
    assert db.execute("SELECT count(*) FROM parent").fetchone() == (1,) and \
        db.execute("SELECT count(*) FROM child").fetchone() == (0,)
    db.close()
