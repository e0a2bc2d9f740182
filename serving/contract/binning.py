"""Calibration and drift maths shared by the pipeline and the model server (numpy only).

ECE is count-weighted over equal-width or equal-mass bins; PSI compares two binned
distributions on frozen edges. The ranking metrics (ROC-AUC, average precision, Brier)
are scikit-learn's, on the pipeline side (``tasks.metrics``).
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


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


def equal_mass_edges(p, n_bins: int) -> np.ndarray:
    """Inner edges that cut the sorted scores into ``n_bins`` (nearly) equal parts, ties kept together.

    Each cut goes at the start of the run of equal scores it falls in, so a score value never
    straddles two bins and the result depends on the values only, not on the row order. With
    many ties there are fewer, unequal bins.
    """
    s = np.sort(np.asarray(p, dtype=np.float64).ravel())
    if s.size == 0:
        return s
    cuts = np.round(np.arange(1, n_bins) * s.size / n_bins).astype(int)
    cuts = cuts[(cuts > 0) & (cuts < s.size)]
    return np.unique(s[cuts])


def reliability_bins(y_true, p, n_bins: int = 10, strategy: BinStrategy = "width") -> list[ReliabilityBin]:
    """Group predictions into bins by score value; empty bins are left out.

    ``width``: equal-width bins on [0, 1]. ``mass``: bins of (nearly) equal counts whose edges are
    score values (``equal_mass_edges``): equal scores always share a bin.
    """
    y, s = _as_arrays(y_true, p)
    if y.size == 0:
        return []
    if strategy == "width":
        idx = np.clip((s * n_bins).astype(int), 0, n_bins - 1)
        n_groups = n_bins
    elif strategy == "mass":
        idx = np.searchsorted(equal_mass_edges(s, n_bins), s, side="right")
        n_groups = int(idx.max()) + 1
    else:
        raise ValueError(f"unknown bin strategy {strategy!r}")
    out = []
    for b in range(n_groups):
        g = idx == b
        if not g.any():
            continue
        lo, hi = (b / n_bins, (b + 1) / n_bins) if strategy == "width" else (float(s[g].min()), float(s[g].max()))
        out.append(ReliabilityBin(lo, hi, int(g.sum()), float(s[g].mean()), float(y[g].mean())))
    return out


def ece(y_true, p, n_bins: int = 10, strategy: BinStrategy = "width") -> float:
    """Expected calibration error: count-weighted mean |observed rate - mean prediction| over bins."""
    bins = reliability_bins(y_true, p, n_bins, strategy)
    total = sum(b.count for b in bins)
    return float(sum(b.count * abs(b.observed_rate - b.mean_predicted) for b in bins) / total) if total else 0.0


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
