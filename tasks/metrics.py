"""The release metrics of a set of scores: scikit-learn's ranking metrics and Brier, and ECE.

ECE is count-weighted over equal-width or equal-mass bins. Production's hourly ECE
(``serving.contract.drift.label_metrics``) uses the same equal-width bins, so a model is judged by the
same binning at release time and in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from serving.contract.drift import THRESHOLD

BinStrategy = Literal["width", "mass"]


def binary_metrics(y_true, p, n_bins: int = 10) -> dict[str, float]:
    """ROC-AUC, average precision (PR-AUC), Brier, ECE over equal-width and equal-mass bins, and the
    precision and recall of ``p >= 0.5``.

    Raises:
        ValueError: the labels hold one class only (ROC-AUC is undefined).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y_true, dtype=np.int64).ravel()
    s = np.asarray(p, dtype=np.float64).ravel()
    if np.unique(y).size < 2:
        raise ValueError("ROC-AUC needs both classes")
    predicted = s >= THRESHOLD
    absolute = {
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "brier": float(brier_score_loss(y, s)),
        "ece": ece(y, s, n_bins, "width"),
        "ece_equal_mass": ece(y, s, n_bins, "mass"),
        # At p >= 0.5, the monitor's baseline for the guide's "precision drops > 10 points".
        "precision": float(y[predicted].mean()) if predicted.any() else 0.0,
        "recall": float(predicted[y == 1].mean()),
    }
    return {**absolute, **chance_relative(absolute, float(y.mean()))}


def chance_relative(metrics: dict, positive_rate) -> dict:
    """PR-AUC, Brier and ECE against what chance gives at the positive rate ``p``, so one bound means the
    same on a 5 % and a 50 % positive rate (the quality gate's defaults use these):

    - ``pr_auc_lift`` = PR-AUC / p: a random ranking's average precision is p, so 1 is chance;
    - ``brier_skill`` = 1 - Brier / (p (1 - p)): the Brier skill score over always predicting p
      (0: no better than the base rate, 1: perfect);
    - ``ece_relative`` = ECE / min(p, 1 - p): the calibration error as a share of the minority class's rate.

    ``metrics`` and ``positive_rate`` may be floats or arrays (one per bootstrap resample); also returns p.
    """
    p = positive_rate
    out = {"positive_rate": p, "pr_auc_lift": metrics["pr_auc"] / p,
           "brier_skill": 1.0 - metrics["brier"] / (p * (1.0 - p)),
           "ece_relative": metrics["ece"] / np.minimum(p, 1.0 - p)}
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in out.items()}


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
