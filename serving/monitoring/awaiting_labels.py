"""Scored rows awaiting their labels, a table of the host's monitoring store (serving/monitoring/host_store.py).

A label sent to any worker finds the row any worker scored: the table is in ``run/monitoring/scored.sqlite``
beside the state file, which the host's server processes share. A lone server without a state file keeps
the same table in memory.

    scored(request_id, version, at, n, prob float32[n], raw float64[n] or NULL, labels int8[n] or NULL)

Insertion order (``rowid``) is the eviction order: rows older than the TTL go, and the oldest go
while more than ``max_rows`` rows are held. ``totals`` (kept by triggers) counts requests, rows and
evicted rows for the host.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from serving.monitoring.host_store import open_store, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS scored (request_id TEXT PRIMARY KEY, version TEXT NOT NULL, at REAL NOT NULL,
                                   n INTEGER NOT NULL, prob BLOB NOT NULL, raw BLOB, labels BLOB);
CREATE INDEX IF NOT EXISTS scored_at ON scored (at);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), requests INTEGER NOT NULL,
                                   rows INTEGER NOT NULL, evicted INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0);
CREATE TRIGGER IF NOT EXISTS scored_in AFTER INSERT ON scored
    BEGIN UPDATE totals SET requests = requests + 1, rows = rows + NEW.n WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS scored_out AFTER DELETE ON scored
    BEGIN UPDATE totals SET requests = requests - 1, rows = rows - OLD.n WHERE id = 0; END;
"""
EVICT_CHUNK = 1000


class AwaitingLabels:
    """The rows awaiting labels (thread safe; several processes may open the same file)."""

    def __init__(self, path: Path | None, ttl_s: float, max_rows: int) -> None:
        self.path, self.ttl_s, self.max_rows = path, ttl_s, max_rows
        self._lock = threading.Lock()
        self._db = open_store(path, SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ write
    def add(self, rows: list[tuple[str, str, float, np.ndarray, np.ndarray | None]], now: float) -> None:
        """Keep scored rows (request id, version, scored at, probabilities, raw scores or None); a request id
        seen before is replaced. Then evict what is past the TTL or over ``max_rows``."""
        records = [(rid, version, at, int(prob.size), np.asarray(prob, dtype=np.float32).tobytes(),
                    None if raw is None else np.asarray(raw, dtype=np.float64).tobytes())
                   for rid, version, at, prob, raw in rows]
        with self._lock, transaction(self._db) as db:
            if records:
                db.executemany("DELETE FROM scored WHERE request_id = ?", [(r[0],) for r in records])
                db.executemany("INSERT INTO scored (request_id, version, at, n, prob, raw) VALUES (?, ?, ?, ?, ?, ?)",
                               records)
            self._evict(db, now)

    def _evict(self, db, now: float) -> None:
        cutoff = now - self.ttl_s
        (old,) = db.execute("SELECT COALESCE(SUM(n), 0) FROM scored WHERE at < ?", (cutoff,)).fetchone()
        if old:
            db.execute("DELETE FROM scored WHERE at < ?", (cutoff,))
        evicted = old
        (held,) = db.execute("SELECT rows FROM totals WHERE id = 0").fetchone()
        while held > self.max_rows:
            last = None
            for rowid, n in db.execute("SELECT rowid, n FROM scored ORDER BY rowid LIMIT ?", (EVICT_CHUNK,)):
                last, held, evicted = rowid, held - n, evicted + n
                if held <= self.max_rows:
                    break
            if last is None:
                break
            db.execute("DELETE FROM scored WHERE rowid <= ?", (last,))
        if evicted:
            db.execute("UPDATE totals SET evicted = evicted + ? WHERE id = 0", (evicted,))

    def label(self, items: list[tuple[str, int, int]]) -> list[tuple]:
        """Apply labels (request id, row, label) in one transaction. For each item: ``("unknown",)``, or
        (outcome, version, scored at, probability, label before or -1) with outcome unchanged, accepted or
        replaced."""
        out = []
        with self._lock, transaction(self._db) as db:
            held: dict[str, tuple | None] = {}        # request id -> (version, at, probabilities, labels)
            changed: set[str] = set()
            for rid, row, label in items:
                if rid not in held:
                    found = db.execute("SELECT version, at, prob, labels, n FROM scored WHERE request_id = ?",
                                       (rid,)).fetchone()
                    held[rid] = None if found is None else (
                        found[0], found[1], np.frombuffer(found[2], dtype=np.float32),
                        np.frombuffer(found[3], dtype=np.int8).copy() if found[3] is not None
                        else np.full(found[4], -1, dtype=np.int8))
                rows = held[rid]
                if rows is None or not 0 <= row < rows[2].size:
                    out.append(("unknown",))
                    continue
                version, at, prob, labels = rows
                before = int(labels[row])
                p = float(prob[row])
                if before == label:
                    out.append(("unchanged", version, at, p, before))
                    continue
                labels[row] = label           # a later item of the same call sees it
                changed.add(rid)
                out.append(("replaced" if before >= 0 else "accepted", version, at, p, before))
            db.executemany("UPDATE scored SET labels = ? WHERE request_id = ?",
                           [(held[rid][3].tobytes(), rid) for rid in changed])
        return out

    # ------------------------------------------------------------ read
    def labelled(self, version: str, since: float, limit: int) -> tuple[list[dict], int, int]:
        """The labelled rows of ``version`` scored at or after ``since``, oldest first, the newest ``limit`` of
        them; with the number of labelled rows that have a raw score, and of those without."""
        found: list[tuple] = []
        total = without_raw = kept = 0
        with self._lock:
            cursor = self._db.execute("SELECT request_id, at, prob, raw, labels FROM scored WHERE version = ? "
                                      "AND labels IS NOT NULL AND at >= ? ORDER BY rowid DESC", (version, since))
            for rid, at, prob, raw, labels in cursor:          # newest first, so the cap keeps the newest
                labels = np.frombuffer(labels, dtype=np.int8)
                which = np.flatnonzero(labels >= 0)
                if not which.size:
                    continue
                if raw is None:
                    without_raw += int(which.size)
                    continue
                total += int(which.size)
                room = limit - kept
                if room > 0:
                    which = which[-room:]
                    kept += int(which.size)
                    found.append((rid, at, np.frombuffer(prob, dtype=np.float32),
                                  np.frombuffer(raw, dtype=np.float64), labels, which))
        rows = []
        for rid, at, prob, raw, labels, which in reversed(found):
            rows += [{"request_id": rid, "row": int(i), "raw_score": float(raw[i]), "probability": float(prob[i]),
                      "label": int(labels[i]), "scored_at": at} for i in which.tolist()]
        return rows, total, without_raw

    def totals(self) -> dict:
        with self._lock:
            requests, rows, evicted = self._db.execute(
                "SELECT requests, rows, evicted FROM totals WHERE id = 0").fetchone()
        return {"requests": requests, "rows": rows, "evicted_rows": evicted}
