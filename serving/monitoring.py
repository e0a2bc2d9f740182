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
applies what is queued before a read, so a reader sees every request answered before it.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from serving.inputs import MISSING_CATEGORY
from serving.schema import schema_from_dict

log = logging.getLogger(__name__)

EXTREME_LOW, EXTREME_HIGH = 0.05, 0.95
LINGER_S = 0.1              # how long the thread lets events gather into one batch
MAX_BATCH_EVENTS = 20_000
LABEL_BINS = 200
# The most labelled rows one read returns (the newest ones); ~100 bytes each as JSON, so ~10 MB.
LABELLED_MAX_ROWS = 100_000
# Latency buckets from 0.1 ms to 60 s, each ~12 % wider than the one before: a quantile read off
# them is the bucket's upper edge, at most 12 % above the true value.
LATENCY_EDGES = np.geomspace(1e-4, 60.0, 119)


def _quantile_ms(counts: np.ndarray, q: float) -> float | None:
    total = int(counts.sum())
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), math.ceil(q * total)))
    upper = LATENCY_EDGES[i] if i < LATENCY_EDGES.size else LATENCY_EDGES[-1]
    return round(float(upper) * 1e3, 3)


@dataclass(frozen=True)
class FeatureBins:
    """How one model input is counted: on the reference's edges or categories."""

    name: str
    kind: str                         # numeric | categorical | boolean
    edges: tuple[float, ...] = ()     # numeric: inner edges; bins (-inf, e0), [e0, e1), …, [e_last, inf)
    categories: tuple[str, ...] = ()  # categorical: training categories; boolean: ("false", "true")

    @property
    def size(self) -> int:
        """Buckets: the bins or categories, then (categorical) unseen, then null."""
        return len(self.edges) + 2 if self.kind == "numeric" else len(self.categories) + 2

    def count(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.int64)
        if self.kind == "numeric":
            v = values.astype(np.float64, copy=False)
            null = np.isnan(v)
            out[: len(self.edges) + 1] = np.bincount(np.searchsorted(self.edges, v[~null], side="right"),
                                                     minlength=len(self.edges) + 1)
            out[-1] = int(null.sum())
        elif self.kind == "boolean":
            v = values.astype(np.float64, copy=False)
            out[0], out[1], out[3] = int((v == 0).sum()), int((v == 1).sum()), int(np.isnan(v).sum())
        else:
            index = {c: i for i, c in enumerate(self.categories)}
            seen, counts = np.unique(values.astype(str), return_counts=True)
            for value, n in zip(seen.tolist(), counts.tolist()):
                if value == MISSING_CATEGORY:
                    out[-1] += n
                else:
                    out[index.get(value.strip(), len(self.categories))] += n
        return out

    def describe(self) -> dict:
        if self.kind == "numeric":
            return {"kind": "numeric", "edges": list(self.edges), "buckets": "bins, then null"}
        return {"kind": self.kind, "categories": list(self.categories), "buckets": "categories, unseen, null"}


def feature_bins(metadata) -> dict[str, FeatureBins]:
    """The reference bins of every model input that has a reference in ``metadata``."""
    ref = metadata.reference or {}
    out = {}
    for spec in metadata.inputs:
        if spec.name in (ref.get("numeric") or {}):
            out[spec.name] = FeatureBins(spec.name, "numeric", edges=tuple(ref["numeric"][spec.name]["edges"]))
        elif spec.name in (ref.get("categorical") or {}):
            cats = tuple(ref["categorical"][spec.name]["categories"])
            out[spec.name] = FeatureBins(spec.name, "boolean" if spec.type == "boolean" else "categorical",
                                         categories=cats)
    return out


@dataclass
class Aggregate:
    """One version's traffic in one window."""

    requests: int = 0
    rows: int = 0
    status: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)          # feature -> input problems
    latency: np.ndarray = field(default_factory=lambda: np.zeros(LATENCY_EDGES.size + 1, dtype=np.int64))
    features: dict[str, np.ndarray] = field(default_factory=dict)
    outside: dict[str, int] = field(default_factory=dict)          # feature -> values outside soft bounds
    prediction: np.ndarray | None = None
    p_sum: float = 0.0
    p_sumsq: float = 0.0
    extremes: int = 0

    def add_requests(self, statuses: list[int], seconds: np.ndarray, rejected: list[str]) -> None:
        self.requests += len(statuses)
        for status in statuses:
            key = str(status)
            self.status[key] = self.status.get(key, 0) + 1
        for feature in rejected:
            self.rejected[feature] = self.rejected.get(feature, 0) + 1
        self.latency += np.bincount(np.searchsorted(LATENCY_EDGES, seconds, side="left"),
                                    minlength=self.latency.size)

    def add_scored(self, bins: dict[str, FeatureBins], pred_edges: np.ndarray, columns: dict[str, np.ndarray],
                   prob: np.ndarray, soft: tuple = ()) -> None:
        self.rows += int(prob.size)
        for spec in soft:
            if spec.name in columns:
                values = columns[spec.name]
                null = (values == MISSING_CATEGORY) if spec.type == "categorical" else np.isnan(
                    values.astype(np.float64, copy=False))
                n = spec.outside_soft_bounds(values, null)
                if n:
                    self.outside[spec.name] = self.outside.get(spec.name, 0) + n
        for name, fb in bins.items():
            if name in columns:
                counts = fb.count(columns[name])
                self.features[name] = self.features[name] + counts if name in self.features else counts
        hist = np.bincount(np.searchsorted(pred_edges, prob, side="right"), minlength=pred_edges.size + 1)
        self.prediction = hist if self.prediction is None else self.prediction + hist
        self.p_sum += float(prob.sum())
        self.p_sumsq += float(np.square(prob).sum())
        self.extremes += int(((prob < EXTREME_LOW) | (prob > EXTREME_HIGH)).sum())

    def merge(self, other: Aggregate) -> None:
        self.requests += other.requests
        self.rows += other.rows
        for src, dst in ((other.status, self.status), (other.rejected, self.rejected), (other.outside, self.outside)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        self.latency = self.latency + other.latency
        for name, counts in other.features.items():
            self.features[name] = self.features[name] + counts if name in self.features else counts.copy()
        if other.prediction is not None:
            self.prediction = other.prediction.copy() if self.prediction is None else self.prediction + other.prediction
        self.p_sum += other.p_sum
        self.p_sumsq += other.p_sumsq
        self.extremes += other.extremes

    def summary(self) -> dict:
        """The few numbers a time series needs (dashboard, volume and latency rules)."""
        errors_4xx = sum(v for k, v in self.status.items() if k.startswith("4"))
        errors_5xx = sum(v for k, v in self.status.items() if k.startswith("5"))
        return {"requests": self.requests, "rows": self.rows, "errors_4xx": errors_4xx, "errors_5xx": errors_5xx,
                "p50_ms": _quantile_ms(self.latency, 0.50), "p95_ms": _quantile_ms(self.latency, 0.95),
                "p99_ms": _quantile_ms(self.latency, 0.99),
                "mean_prediction": round(self.p_sum / self.rows, 6) if self.rows else None}

    def to_dict(self, bins: dict[str, FeatureBins], pred_edges: np.ndarray) -> dict:
        return {**self.summary(), "status": dict(self.status), "rejected_by_feature": dict(self.rejected),
                "outside_soft_bounds": dict(self.outside),
                "latency_buckets_s": {"edges": LATENCY_EDGES.round(6).tolist(), "counts": self.latency.tolist()},
                "features": {name: {**fb.describe(), "counts": self.features[name].tolist()}
                             for name, fb in bins.items() if name in self.features},
                "prediction": {"edges": pred_edges.tolist(),
                               "counts": self.prediction.tolist() if self.prediction is not None else [],
                               "n": self.rows, "sum": self.p_sum, "sum_squares": self.p_sumsq,
                               "extremes": self.extremes}}


@dataclass
class LabelHist:
    """Labelled rows of one version scored in one label window: per-label counts per probability bin."""

    positive: np.ndarray = field(default_factory=lambda: np.zeros(LABEL_BINS, dtype=np.int64))
    negative: np.ndarray = field(default_factory=lambda: np.zeros(LABEL_BINS, dtype=np.int64))
    p_sum: np.ndarray = field(default_factory=lambda: np.zeros(LABEL_BINS, dtype=np.float64))

    def add(self, p: float, label: int, sign: int = 1) -> None:
        b = min(int(p * LABEL_BINS), LABEL_BINS - 1)
        (self.positive if label else self.negative)[b] += sign
        self.p_sum[b] += sign * p

    def to_dict(self) -> dict:
        return {"bins": LABEL_BINS, "positive": self.positive.tolist(), "negative": self.negative.tolist(),
                "probability_sum": self.p_sum.round(9).tolist(), "n": int(self.positive.sum() + self.negative.sum())}


@dataclass
class ScoredRows:
    version: str
    at: float
    probabilities: np.ndarray
    labels: np.ndarray | None = None      # allocated with the first label; -1 where none came yet
    raw: np.ndarray | None = None         # the network's scores before calibration (a recalibration fits on them)


class Recorder:
    """Aggregates request events per (window, version); holds scored rows until their labels arrive."""

    def __init__(self, window_s: int = 60, keep_windows: int = 1440, label_window_s: int = 3600,
                 feedback_ttl_s: int = 7 * 86400, feedback_max_rows: int = 1_000_000, clock=time.time) -> None:
        self.window_s, self.keep_windows, self.label_window_s = window_s, keep_windows, label_window_s
        self.feedback_ttl_s, self.feedback_max_rows = feedback_ttl_s, feedback_max_rows
        self.clock = clock
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self._bins: dict[str, tuple[dict[str, FeatureBins], np.ndarray]] = {}
        self._soft: dict[str, tuple] = {}
        self._windows: dict[tuple[int, str], Aggregate] = {}
        self._labels: dict[tuple[int, str], LabelHist] = {}
        self._scored: OrderedDict[str, ScoredRows] = OrderedDict()
        self._scored_rows = 0
        self.evicted_rows = 0
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
        while not self._stop.wait(LINGER_S):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _drain(self) -> list[tuple]:
        events = []
        while len(events) < MAX_BATCH_EVENTS:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        return events

    def flush(self) -> None:
        """Apply every queued event now (a reader sees each request answered before it)."""
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
                    for event in group:
                        raw = None if event[7] is None else np.asarray(event[7], dtype=np.float64)
                        self._keep_scored(event[3], ScoredRows(version, event[1], event[5].astype(np.float32),
                                                               raw=raw))
                if events:
                    self._prune(max(e[1] for e in events))
        except Exception:   # monitoring never takes serving down; the events are lost and logged
            log.exception("monitoring: could not record %d event(s)", len(events))

    def _aggregate(self, start: int, version: str) -> Aggregate:
        key = (start, version)
        agg = self._windows.get(key)
        if agg is None:
            agg = self._windows[key] = Aggregate()
        return agg

    def _keep_scored(self, request_id: str, rows: ScoredRows) -> None:
        old = self._scored.pop(request_id, None)
        if old is not None:
            self._scored_rows -= old.probabilities.size
        self._scored[request_id] = rows
        self._scored_rows += rows.probabilities.size

    def _prune(self, now: float) -> None:
        oldest = self._window(now) - (self.keep_windows - 1) * self.window_s
        for key in [k for k in self._windows if k[0] < oldest]:
            del self._windows[key]
        label_oldest = now - self.feedback_ttl_s - self.label_window_s
        for key in [k for k in self._labels if k[0] < label_oldest]:
            del self._labels[key]
        while self._scored and (self._scored_rows > self.feedback_max_rows
                                or next(iter(self._scored.values())).at < now - self.feedback_ttl_s):
            _rid, rows = self._scored.popitem(last=False)
            self._scored_rows -= rows.probabilities.size
            self.evicted_rows += rows.probabilities.size

    # ------------------------------------------------------------ labels
    def feedback(self, items: list[dict]) -> dict:
        """Labels by request id (and 0-based row, default 0); idempotent: a label sent again changes
        nothing, a different label replaces the first."""
        self.flush()
        counts = {"accepted": 0, "unchanged": 0, "replaced": 0, "unknown": 0, "invalid": 0}
        unknown, invalid = [], []
        with self._lock:
            for i, item in enumerate(items):
                rid = item.get("request_id") if isinstance(item, dict) else None
                label, row = (item.get("label"), item.get("row", 0)) if isinstance(item, dict) else (None, None)
                if label in (True, False, 0, 1) and not isinstance(label, float):
                    label = int(label)
                else:
                    label = None
                if not isinstance(rid, str) or label is None or type(row) is not int:
                    counts["invalid"] += 1
                    invalid.append(i)
                    continue
                rows = self._scored.get(rid)
                if rows is None or not 0 <= row < rows.probabilities.size:
                    counts["unknown"] += 1
                    unknown.append(rid if rows is None else f"{rid}#{row}")
                    continue
                key = (int(rows.at // self.label_window_s) * self.label_window_s, rows.version)
                hist = self._labels.setdefault(key, LabelHist())
                if rows.labels is None:
                    rows.labels = np.full(rows.probabilities.size, -1, dtype=np.int8)
                before = int(rows.labels[row])
                p = float(rows.probabilities[row])
                if before == label:
                    counts["unchanged"] += 1
                    continue
                if before >= 0:
                    hist.add(p, before, sign=-1)
                    counts["replaced"] += 1
                else:
                    counts["accepted"] += 1
                hist.add(p, label)
                rows.labels[row] = label
        return {**counts, "unknown_ids": unknown[:20], "invalid_items": invalid[:20]}

    # ------------------------------------------------------------ reads
    def labelled(self, version: str, since: float = 0.0, limit: int = LABELLED_MAX_ROWS) -> dict:
        """The labelled rows of ``version`` scored at or after ``since``, oldest first: request id, row,
        raw score, probability, label and scored-at; at most ``limit`` (capped at LABELLED_MAX_ROWS),
        the newest ones when there are more. Rows recorded without a raw score are counted, not returned."""
        self.flush()
        limit = max(0, min(int(limit), LABELLED_MAX_ROWS))
        found: list[tuple[str, ScoredRows, np.ndarray]] = []
        total = without_raw = 0
        with self._lock:
            for rid, rows in reversed(self._scored.items()):      # newest first, so the cap keeps the newest
                if rows.version != version or rows.labels is None or rows.at < since:
                    continue
                which = np.flatnonzero(rows.labels >= 0)
                if not which.size:
                    continue
                if rows.raw is None:
                    without_raw += int(which.size)
                    continue
                total += int(which.size)
                room = limit - sum(w.size for _r, _s, w in found)
                if room > 0:
                    found.append((rid, rows, which[-room:]))
        out = []
        for rid, rows, which in reversed(found):
            out += [{"request_id": rid, "row": int(i), "raw_score": float(rows.raw[i]),
                     "probability": float(rows.probabilities[i]), "label": int(rows.labels[i]),
                     "scored_at": rows.at} for i in which.tolist()]
        return {"version": version, "since": since, "rows": out, "returned": len(out), "labelled": total,
                "truncated": total > len(out), "without_raw_score": without_raw, "max_rows": LABELLED_MAX_ROWS}

    def window(self, since: float, until: float | None = None) -> dict:
        """Everything recorded in [since, until): merged per version, a series per window, and labels."""
        self.flush()
        until = self.clock() if until is None else until
        with self._lock:
            merged: dict[str, Aggregate] = {}
            series: dict[str, list[dict]] = {}
            for (start, version), agg in sorted(self._windows.items()):
                if start + self.window_s > since and start < until:     # the window overlaps [since, until)
                    merged.setdefault(version, Aggregate()).merge(agg)
                    series.setdefault(version, []).append({"start": start, **agg.summary()})
            labels: dict[str, list[dict]] = {}
            for (start, version), hist in sorted(self._labels.items()):
                if start + self.label_window_s > since and start < until:
                    labels.setdefault(version, []).append({"start": start, **hist.to_dict()})
            versions = {}
            for version in sorted(set(merged) | set(labels)):
                bins, pred_edges = self._bins.get(version, ({}, np.asarray([0.5])))
                versions[version] = {**(merged[version].to_dict(bins, pred_edges) if version in merged else {}),
                                     "series": series.get(version, []), "labels": labels.get(version, [])}
            return {"since": since, "until": until, "window_seconds": self.window_s,
                    "label_window_seconds": self.label_window_s, "versions": versions,
                    "awaiting_labels": {"requests": len(self._scored), "rows": self._scored_rows,
                                        "evicted_rows": self.evicted_rows,
                                        "ttl_seconds": self.feedback_ttl_s, "max_rows": self.feedback_max_rows}}
