"""Metric maths shared by training, the quality gate and monitoring (numpy only).

ROC-AUC, average precision and Brier follow scikit-learn's definitions (the tests
compare against it); ECE is count-weighted over equal-width or equal-mass bins;
PSI compares two binned distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BinStrategy = Literal["width", "mass"]
PSI_EPSILON = 1e-4


def _as_arrays(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    return y, s


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    y, s = _as_arrays(y_true, score)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both classes")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank within each block of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true, score) -> float:
    """Area under the precision-recall curve as a step function (scikit-learn's ``average_precision_score``)."""
    y, s = _as_arrays(y_true, score)
    n_pos = y.sum()
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_tie]
    seen = (np.arange(1, s.size + 1))[last_of_tie]
    precision = tp / seen
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y_true, p) -> float:
    y, s = _as_arrays(y_true, p)
    return float(np.mean((s - y) ** 2))


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


def reliability_bins(y_true, p, n_bins: int = 10, strategy: BinStrategy = "width") -> list[ReliabilityBin]:
    """Group predictions into bins; empty bins are left out.

    ``width``: equal-width bins on [0, 1]. ``mass``: bins of (nearly) equal counts,
    built by splitting the sorted predictions, so ties cannot make a bin empty.
    """
    y, s = _as_arrays(y_true, p)
    if y.size == 0:
        return []
    if strategy == "width":
        idx = np.clip((s * n_bins).astype(int), 0, n_bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(n_bins)]
        bounds = [(b / n_bins, (b + 1) / n_bins) for b in range(n_bins)]
    elif strategy == "mass":
        order = np.argsort(s, kind="mergesort")
        groups = np.array_split(order, min(n_bins, s.size))
        bounds = [(float(s[g].min()), float(s[g].max())) if g.size else (0.0, 0.0) for g in groups]
    else:
        raise ValueError(f"unknown bin strategy {strategy!r}")
    return [ReliabilityBin(lo, hi, int(g.size), float(s[g].mean()), float(y[g].mean()))
            for g, (lo, hi) in zip(groups, bounds) if g.size]


def ece(y_true, p, n_bins: int = 10, strategy: BinStrategy = "width") -> float:
    """Expected calibration error: count-weighted mean |observed rate - mean prediction| over bins."""
    bins = reliability_bins(y_true, p, n_bins, strategy)
    total = sum(b.count for b in bins)
    return float(sum(b.count * abs(b.observed_rate - b.mean_predicted) for b in bins) / total) if total else 0.0


def binary_metrics(y_true, p, n_bins: int = 10) -> dict[str, float]:
    """The four release metrics plus ECE over equal-mass bins."""
    return {
        "roc_auc": roc_auc(y_true, p),
        "pr_auc": average_precision(y_true, p),
        "brier": brier(y_true, p),
        "ece": ece(y_true, p, n_bins, "width"),
        "ece_equal_mass": ece(y_true, p, n_bins, "mass"),
    }


# ---------------------------------------------------------------- drift

def quantile_edges(values, n_bins: int = 10) -> list[float]:
    """Inner bin edges at the quantiles of the finite values (duplicates dropped).

    The outer bins are open: bin 0 is (-inf, edges[0]), the last is [edges[-1], inf).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(x) for x in np.unique(qs)]


def bin_fractions(values, edges: list[float]) -> list[float]:
    """Fraction of the finite values in each of the ``len(edges) + 1`` bins."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    counts = np.bincount(np.searchsorted(np.asarray(edges), v, side="right"), minlength=len(edges) + 1)
    return [float(c) for c in counts / max(v.size, 1)]


def psi(expected, actual, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two binned distributions (fractions summing to 1).

    Empty bins are floored at ``epsilon`` so one empty bin gives a large but finite value.
    """
    e = np.clip(np.asarray(expected, dtype=np.float64), epsilon, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), epsilon, None)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs the same bins on both sides ({e.size} vs {a.size})")
    return float(np.sum((a - e) * np.log(a / e)))
