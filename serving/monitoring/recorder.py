"""What the server records for monitoring: counts per version and time window, off the request path.

    per (window, version), windows of SERVING_MONITOR_WINDOW_S (60 s), the last
    SERVING_MONITOR_WINDOWS (1,440: a day of minutes) kept:
        requests and scored rows; responses by status; rejected inputs by feature; values outside
        soft schema bounds by feature (scored, counted as drift)
        latency histogram (log-spaced buckets) -> p50 / p95 / p99
        every model input counted on the export's frozen reference bins: numeric on the
        quantile edges (open at both ends) plus a null bucket; categorical and boolean on the
        training categories plus an unseen bucket and a null bucket
        the predictions on the reference's edges, their sum, sum of squares and extremes
        (p < 0.05 or p > 0.95)
    labels that come back through /feedback, per (hour the row was scored in, version), kept as
        long as scored rows are: per-label histograms of the predicted probability on
        LABEL_BINS equal bins, with the sum of probabilities per bin (ECE, ROC-AUC, precision
        and recall follow from them)
    scored rows awaiting labels: request id -> (version, time, probabilities, raw network scores),
        for SERVING_FEEDBACK_TTL_S (7 days) and at most SERVING_FEEDBACK_MAX_ROWS rows; the
        labelled ones are read back row by row (``labelled``, at most LABELLED_MAX_ROWS a call) to
        refit a calibrator on (``python -m flows recalibrate --labels feedback``)

No raw feature value is kept, so what leaves the host are counts and the cost of PSI does not
grow with traffic. Request handlers put an event on a queue; one thread aggregates; ``flush``
applies what is queued before a read, so a reader sees every request this process answered before it.

With several server processes on a host (a state file), monitoring is the host's, through one SQLite file
they share (serving/monitoring/host_store.py): the scored rows awaiting labels are a table of it, so a label
sent to any worker finds the row any worker scored (serving/monitoring/awaiting_labels.py), and each worker
writes its windows to it, so a read on any worker merges every worker's (serving/monitoring/host_windows.py).
A lone process keeps the same in memory.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from serving.contract.schema import schema_from_dict
from serving.monitoring.awaiting_labels import AwaitingLabels
from serving.monitoring.counts import (  # noqa: F401  (re-exported: what callers and tests import from here)
    LABEL_BINS,
    LATENCY_EDGES,
    Aggregate,
    FeatureBins,
    LabelHist,
    feature_bins,
)
from serving.monitoring.host_store import WriteFaults
from serving.monitoring.host_windows import SHARE_EVERY_S, HostWindows
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

LINGER_S = 0.1              # how long the thread lets events gather into one batch
MAX_BATCH_EVENTS = 20_000
# The most labelled rows one read returns (the newest ones); ~100 bytes each as JSON, so ~10 MB.
LABELLED_MAX_ROWS = 100_000
DELETE_EXPIRED_EVERY_S = 60   # expired windows (this worker's, the others') are deleted from the store this often


class Recorder:
    """Aggregates request events per (window, version); holds scored rows until their labels arrive.

    With ``host`` (one of several processes on a host) this worker's windows are written to the host's store
    for the others and a read merges theirs; the scored rows are in the same store, shared.
    """

    @classmethod
    def for_settings(cls, settings: ServingSettings) -> Recorder:
        """The server's recorder: the host's (shared with the other workers through the store in the state
        file's folder, serving/monitoring/host_store.py) when there is a state file, else this process's alone."""
        host = HostWindows.for_state_file(settings.state_file) if settings.state_file is not None else None
        return cls(settings.monitor_window_s, settings.monitor_windows, settings.label_window_s,
                   settings.feedback_ttl_s, settings.feedback_max_rows, host=host)

    def __init__(self, window_s: int = 60, keep_windows: int = 1440, label_window_s: int = 3600,
                 feedback_ttl_s: int = 7 * 86400, feedback_max_rows: int = 1_000_000, clock=time.time,
                 host: HostWindows | None = None) -> None:
        self.window_s, self.keep_windows, self.label_window_s = window_s, keep_windows, label_window_s
        self.feedback_ttl_s, self.feedback_max_rows = feedback_ttl_s, feedback_max_rows
        self.clock = clock
        self.host = host
        self.scored_rows = AwaitingLabels(host.store_path if host else None, feedback_ttl_s, feedback_max_rows)
        self.write_faults = WriteFaults(host.store_path if host else None)   # what /health says of failed writes
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self._sharing = threading.Lock()
        self._bins: dict[str, tuple[dict[str, FeatureBins], np.ndarray]] = {}
        self._soft: dict[str, tuple] = {}
        self._windows: dict[tuple[int, str], Aggregate] = {}
        self._labels: dict[tuple[int, str], LabelHist] = {}
        self._dirty: set[tuple[str, int]] = set()        # ("w" | "l", start) changed since they were last shared
        self._shared_at = self._expired_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitoring", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ request path: enqueue only
    def register(self, version: str, metadata) -> None:
        """Count a version's inputs on its export's reference bins (called when it is loaded)."""
        edges = (metadata.reference or {}).get("prediction", {}).get("edges") or [0.1 * i for i in range(1, 10)]
        soft = ()
        if getattr(metadata, "schema_", None):
            inputs = {i.name for i in metadata.inputs}
            soft = tuple(c for c in schema_from_dict(metadata.schema_).columns
                         if c.bounds == "soft" and c.name in inputs)
        with self._lock:
            self._bins[version] = (feature_bins(metadata), np.asarray(edges, dtype=np.float64))
            self._soft[version] = soft

    def request(self, version: str, status: int, seconds: float, rejected: tuple[str, ...] = ()) -> None:
        self._events.put(("request", self.clock(), version, status, seconds, rejected))

    def scored(self, version: str, request_id: str, columns: dict[str, np.ndarray], prob: np.ndarray,
               seconds: float | None = None, raw: np.ndarray | None = None) -> None:
        """Rows scored for a request; with ``seconds``, also the request itself (answered 200); ``raw``: the
        network's scores before calibration, kept with the probabilities until the labels come."""
        self._events.put(("scored", self.clock(), version, request_id, columns, prob, seconds, raw))

    # ------------------------------------------------------------ the aggregating thread
    def _run(self) -> None:
        # Every LINGER_S, everything queued is recorded in one batch: one count per feature for all the
        # requests of that time instead of one per request keeps the thread's share of the GIL small.
        # On a host, the thread waits on the socket a reader's request to share comes to
        # (serving/monitoring/host_windows.py).
        while not self._stop.is_set():
            try:
                if self.host:
                    token = self.host.wait_for_ask(LINGER_S)
                else:
                    token = None
                    self._stop.wait(LINGER_S)
                self.flush()
                if self.host and (token is not None or time.monotonic() - self._shared_at >= SHARE_EVERY_S):
                    self.share_windows(token)
            except Exception:     # the thread must outlive any one bad round
                log.exception("monitoring: a round of the recorder failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.host:
            try:
                self.flush()
                self.share_windows()      # a worker that stops loses nothing
            except Exception:
                log.exception("monitoring: the last writing of this worker's windows failed")
        self.scored_rows.close()
        if self.host:
            self.host.close()

    def share_windows(self, ack: int | None = None) -> None:
        """Write the windows changed since they were last shared to the host's store, for the other processes
        (host_windows.py); with ``ack``, acknowledge that reader's request."""
        with self._sharing:
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                windows: dict[int, dict] = {}
                labels: dict[int, dict] = {}
                for (start, version), agg in self._windows.items():
                    if ("w", start) in dirty:
                        windows.setdefault(start, {})[version] = agg.to_raw()
                for (start, version), hist in self._labels.items():
                    if ("l", start) in dirty:
                        labels.setdefault(start, {})[version] = hist.to_raw()
            written = False
            try:
                written = self.write_faults.write("windows", self.host.write_mine, windows, labels, ack)
            finally:
                if not written:
                    with self._lock:         # not shared: written again with the next share
                        self._dirty |= dirty
            self._shared_at = time.monotonic()
            if written and time.monotonic() - self._expired_at >= DELETE_EXPIRED_EVERY_S:
                self._expired_at = time.monotonic()
                now = self.clock()
                self.write_faults.write("windows", self.host.delete_expired,
                                        self._window(now) - (self.keep_windows - 1) * self.window_s,
                                        int(now - self.feedback_ttl_s - self.label_window_s))

    def _drain(self) -> list[tuple]:
        events = []
        while len(events) < MAX_BATCH_EVENTS:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        return events

    def flush(self) -> None:
        """Apply every queued event now (a reader sees each request this process answered before it)."""
        with self._draining:      # a batch the thread took is applied before a reader's flush returns
            while events := self._drain():
                self._apply(events)

    def _window(self, at: float) -> int:
        return int(at // self.window_s) * self.window_s

    def _apply(self, events: list[tuple]) -> None:
        """Record a batch of events: requests and scored rows grouped by (window, version)."""
        requests: dict[tuple[int, str], list[tuple]] = {}
        scored: dict[tuple[int, str], list[tuple]] = {}
        for event in events:
            kind, at, version = event[0], event[1], event[2]
            (requests if kind == "request" else scored).setdefault((self._window(at), version), []).append(event)
        try:
            with self._lock:
                for (start, version), group in requests.items():
                    self._aggregate(start, version).add_requests(
                        [e[3] for e in group], np.fromiter((e[4] for e in group), np.float64, len(group)),
                        [f for e in group for f in e[5]])
                for (start, version), group in scored.items():
                    answered = [e[6] for e in group if e[6] is not None]
                    if answered:
                        self._aggregate(start, version).add_requests([200] * len(answered),
                                                                     np.asarray(answered, dtype=np.float64), [])
                    bins, pred_edges = self._bins.get(version, ({}, np.asarray([0.5])))
                    columns = {name: np.concatenate([e[4][name] for e in group]) for name in group[0][4]}
                    prob = np.concatenate([e[5] for e in group])
                    self._aggregate(start, version).add_scored(bins, pred_edges, columns, prob,
                                                               self._soft.get(version, ()))
                now = max(e[1] for e in events)
                self._prune(now)
            self.write_faults.write("scored rows", self.scored_rows.add,
                                    [(e[3], e[2], e[1], e[5], e[7]) for group in scored.values() for e in group], now)
        except Exception:   # monitoring never takes serving down; the events are lost and logged
            log.exception("monitoring: could not record %d event(s)", len(events))

    def _aggregate(self, start: int, version: str) -> Aggregate:
        key = (start, version)
        self._dirty.add(("w", start))
        agg = self._windows.get(key)
        if agg is None:
            agg = self._windows[key] = Aggregate()
        return agg

    def _prune(self, now: float) -> None:
        oldest = self._window(now) - (self.keep_windows - 1) * self.window_s
        for key in [k for k in self._windows if k[0] < oldest]:
            del self._windows[key]
        label_oldest = now - self.feedback_ttl_s - self.label_window_s
        for key in [k for k in self._labels if k[0] < label_oldest]:
            del self._labels[key]

    # ------------------------------------------------------------ labels
    def feedback(self, items: list[dict]) -> dict:
        """Labels by request id (and 0-based row, default 0); idempotent: a label sent again changes
        nothing, a different label replaces the first. A row another process scored is found too; one it
        scored so recently that it is not yet stored is waited for once (the others are asked to flush)."""
        self.flush()
        valid, invalid = _valid_labels(items)
        outcomes = self._label_rows(valid)
        counts = {"accepted": 0, "unchanged": 0, "replaced": 0, "unknown": 0, "invalid": len(invalid)}
        unknown = []
        with self._lock:
            for (rid, row, label), outcome in zip(valid, outcomes):
                counts[outcome[0]] += 1
                if outcome[0] == "unknown":
                    unknown.append(rid if row == 0 else f"{rid}#{row}")
                elif outcome[0] != "unchanged":
                    self._count_label(outcome, label)
        return {**counts, "unknown_ids": unknown[:20], "invalid_items": invalid[:20]}

    def _label_rows(self, valid: list[tuple[str, int, int]]) -> list[tuple]:
        """Label the stored rows (``AwaitingLabels.label``'s outcomes); rows not found are looked for once more
        after the other live workers were asked to flush (they may have scored them within the last batch)."""
        outcomes = self.scored_rows.label(valid)
        missing = [k for k, o in enumerate(outcomes) if o[0] == "unknown"]
        if missing and self.host and self.host.live() - {self.host.me}:
            self.host.ask_others_to_share()
            for k, outcome in zip(missing, self.scored_rows.label([valid[k] for k in missing])):
                outcomes[k] = outcome
        return outcomes

    def _count_label(self, outcome: tuple, label: int) -> None:
        """Move a labelled row into its label window's histogram (out of the one its previous label put it in);
        the caller holds ``_lock``."""
        _, version, at, p, before = outcome
        start = int(at // self.label_window_s) * self.label_window_s
        hist = self._labels.setdefault((start, version), LabelHist())
        self._dirty.add(("l", start))
        if before >= 0:
            hist.add(p, before, sign=-1)
        hist.add(p, label)

    # ------------------------------------------------------------ reads
    def labelled(self, version: str, since: float = 0.0, limit: int = LABELLED_MAX_ROWS) -> dict:
        """The labelled rows of ``version`` scored at or after ``since`` (by any process of the host), oldest
        first: request id, row, raw score, probability, label and scored-at; at most ``limit`` (capped at
        LABELLED_MAX_ROWS), the newest ones when there are more. Rows recorded without a raw score are
        counted, not returned."""
        self.flush()
        limit = max(0, min(int(limit), LABELLED_MAX_ROWS))
        rows, total, without_raw = self.scored_rows.labelled(version, since, limit)
        return {"version": version, "since": since, "rows": rows, "returned": len(rows), "labelled": total,
                "truncated": total > len(rows), "without_raw_score": without_raw, "max_rows": LABELLED_MAX_ROWS}

    def window(self, since: float, until: float | None = None, fresh: bool = True) -> dict:
        """Everything recorded in [since, until): merged per version, a series per window, and labels.

        With other processes on the host, theirs are merged in; ``fresh`` asks them to share theirs first
        (bounded: ``workers.late`` names any that did not answer in time), else what they last wrote
        (at most SHARE_EVERY_S old) is used."""
        self.flush()
        until = self.clock() if until is None else until
        asked = None
        if self.host:
            asked = self.host.ask_others_to_share() if fresh else {"merged": None, "late": [], "waited_s": 0.0}
        theirs = ([], [])
        if self.host:        # the store read before the lock is taken: the recorder thread waits for no I/O
            theirs = (self.host.others_windows("w", int(since - self.window_s), until),
                      self.host.others_windows("l", int(since - self.label_window_s), until))
        with self._lock:
            return self._answer(since, until, _merged(self._windows, theirs[0], Aggregate),
                                _merged(self._labels, theirs[1], LabelHist), asked)

    def _answer(self, since: float, until: float, windows: dict, label_hists: dict, asked: dict | None) -> dict:
        merged: dict[str, Aggregate] = {}
        series: dict[str, list[dict]] = {}
        for (start, version), agg in sorted(windows.items()):
            if start + self.window_s > since and start < until:     # the window overlaps [since, until)
                merged.setdefault(version, Aggregate()).merge(agg)
                series.setdefault(version, []).append({"start": start, **agg.summary()})
        labels: dict[str, list[dict]] = {}
        for (start, version), hist in sorted(label_hists.items()):
            if start + self.label_window_s > since and start < until:
                labels.setdefault(version, []).append({"start": start, **hist.to_dict()})
        versions = {}
        for version in sorted(set(merged) | set(labels)):
            bins, pred_edges = self._bins.get(version, ({}, np.asarray([0.5])))
            versions[version] = {**(merged[version].to_dict(bins, pred_edges) if version in merged else {}),
                                 "series": series.get(version, []), "labels": labels.get(version, [])}
        held = self.scored_rows.totals()
        answer = {"since": since, "until": until, "window_seconds": self.window_s,
                  "label_window_seconds": self.label_window_s, "versions": versions,
                  "awaiting_labels": {**held, "ttl_seconds": self.feedback_ttl_s, "max_rows": self.feedback_max_rows}}
        if asked is not None:
            answer["workers"] = asked
        return answer


def _valid_labels(items: list) -> tuple[list[tuple[str, int, int]], list[int]]:
    """The well-formed label items as (request id, row, label), and the indexes of the others."""
    valid, invalid = [], []
    for i, item in enumerate(items):
        parsed = _label_item(item)
        if parsed is None:
            invalid.append(i)
        else:
            valid.append(parsed)
    return valid, invalid


def _label_item(item) -> tuple[str, int, int] | None:
    """``{"request_id": str, "label": 0 | 1 | true | false, "row": int (default 0)}``, or None."""
    if not isinstance(item, dict):
        return None
    rid, label, row = item.get("request_id"), item.get("label"), item.get("row", 0)
    if not isinstance(rid, str) or type(row) is not int or isinstance(label, float) or label not in (True, False, 0, 1):
        return None
    return rid, row, int(label)


def _merged(own: dict, theirs: list[tuple[int, dict]], kind) -> dict:
    """This process's (start, version) -> counts with the other processes' added (copies: this process's own
    are never changed)."""
    out = dict(own)
    for start, by_version in theirs:
        for version, raw in by_version.items():
            key = (start, version)
            total = kind()
            if key in out:
                total.merge(out[key])
            total.merge(kind.from_raw(raw))
            out[key] = total
    return out

