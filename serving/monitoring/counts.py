"""The counts a monitoring window holds (requests, inputs on the reference bins, predictions, latency,
labels): additive, so windows of several processes merge by summing (serving/monitoring/recorder.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from serving.contract.inputs import MISSING_CATEGORY

EXTREME_LOW, EXTREME_HIGH = 0.05, 0.95
LABEL_BINS = 200
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

    def to_raw(self) -> dict:
        """Everything, for another process to ``from_raw`` and merge (serving/monitoring/host_windows.py)."""
        return {"requests": self.requests, "rows": self.rows, "status": self.status, "rejected": self.rejected,
                "latency": self.latency, "features": self.features, "outside": self.outside,
                "prediction": self.prediction, "p_sum": self.p_sum, "p_sumsq": self.p_sumsq,
                "extremes": self.extremes}

    @classmethod
    def from_raw(cls, raw: dict) -> Aggregate:
        def ints(values) -> np.ndarray:
            return np.asarray(values, dtype=np.int64)

        return cls(requests=int(raw["requests"]), rows=int(raw["rows"]), status=dict(raw["status"]),
                   rejected=dict(raw["rejected"]), latency=ints(raw["latency"]),
                   features={k: ints(v) for k, v in raw["features"].items()}, outside=dict(raw["outside"]),
                   prediction=None if raw["prediction"] is None else ints(raw["prediction"]),
                   p_sum=float(raw["p_sum"]), p_sumsq=float(raw["p_sumsq"]), extremes=int(raw["extremes"]))

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

    def merge(self, other: LabelHist) -> None:
        self.positive = self.positive + other.positive
        self.negative = self.negative + other.negative
        self.p_sum = self.p_sum + other.p_sum

    def to_raw(self) -> dict:
        return {"positive": self.positive, "negative": self.negative, "p_sum": self.p_sum}

    @classmethod
    def from_raw(cls, raw: dict) -> LabelHist:
        return cls(np.asarray(raw["positive"], dtype=np.int64), np.asarray(raw["negative"], dtype=np.int64),
                   np.asarray(raw["p_sum"], dtype=np.float64))

    def to_dict(self) -> dict:
        return {"bins": LABEL_BINS, "positive": self.positive.tolist(), "negative": self.negative.tolist(),
                "probability_sum": self.p_sum.round(9).tolist(), "n": int(self.positive.sum() + self.negative.sum())}
