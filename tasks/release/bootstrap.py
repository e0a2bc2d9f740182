"""Paired bootstrap of metric differences between two models scored on the same rows.

Each resample draws rows with replacement, positives and negatives separately (a stratified
bootstrap: every resample keeps the class counts, so ROC-AUC is always defined), and the SAME
resample is applied to both models' scores: the interval is of the paired difference, where
the variation the two models share (which rows happen to be in the set) cancels.

A resample is a vector of counts, one per row; the metrics are computed from the counts as
weights, exactly as on the expanded rows (tests/tasks/release/test_bootstrap.py holds them to
``tasks.metrics.binary_metrics`` on the expanded rows). The scores are sorted once per model;
each resample then costs O(rows) per metric, in chunks of resamples at a time.
"""

from __future__ import annotations

import numpy as np

from tasks.constants import HIGHER_IS_BETTER
from tasks.metrics import chance_relative

BOOTSTRAP_METRICS = ("roc_auc", "pr_auc", "brier", "ece", "pr_auc_lift", "brier_skill", "ece_relative")
MAX_CELLS = 50_000_000    # resamples × rows, all chunks together: bounds the work on large eval sets
MIN_RESAMPLES = 200
CHUNK_CELLS = 2_000_000   # resamples × rows held in memory at once


def resamples_for(n_rows: int, wanted: int) -> int:
    """How many resamples to draw: ``wanted``, fewer on very large sets (never under ``MIN_RESAMPLES``),
    where the interval is narrow anyway and the work would be resamples × rows."""
    return int(min(wanted, max(MIN_RESAMPLES, MAX_CELLS // max(n_rows, 1))))


class _Sorted:
    """One model's scores sorted once: groups of equal scores, for the weighted ranking metrics."""

    def __init__(self, y: np.ndarray, p: np.ndarray, n_bins: int) -> None:
        self.order = np.argsort(p, kind="stable")
        s = p[self.order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.pos = y[self.order] == 1
        self.sq_err = (p - y) ** 2
        self.residual = y - p
        bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)   # as tasks.metrics.ece, "width"
        self.onehot = np.zeros((p.size, n_bins))
        self.onehot[np.arange(p.size), bins] = 1.0

    def metrics(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric per row of ``w`` (resamples × rows of counts)."""
        wo = w[:, self.order]
        wp = np.add.reduceat(np.where(self.pos, wo, 0.0), self.starts, axis=1)
        wn = np.add.reduceat(np.where(self.pos, 0.0, wo), self.starts, axis=1)
        n_pos, n_neg, total = wp.sum(1), wn.sum(1), w.sum(1)
        below = np.cumsum(wn, axis=1) - wn
        auc = (wp * (below + 0.5 * wn)).sum(1) / (n_pos * n_neg)
        # Average precision: at each distinct score (threshold), the precision of the rows at or above
        # it, weighted by that score's share of the positives (the recall it adds).
        tp = n_pos[:, None] - np.cumsum(wp, axis=1) + wp
        flagged = tp + (n_neg[:, None] - below)
        precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
        ap = (precision * wp).sum(1) / n_pos
        brier = (w * self.sq_err).sum(1) / total
        ece = np.abs((w * self.residual) @ self.onehot).sum(1) / total
        absolute = {"roc_auc": auc, "pr_auc": ap, "brier": brier, "ece": ece}
        return {**absolute, **chance_relative(absolute, n_pos / total)}


def _counts(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` stratified resamples as counts per row: each class's rows drawn with replacement."""
    w = np.zeros((size, y.size))
    offsets = (np.arange(size) * y.size)[:, None]
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        drawn = idx[rng.integers(0, idx.size, size=(size, idx.size))] + offsets
        w += np.bincount(drawn.ravel(), minlength=size * y.size).reshape(size, y.size)
    return w


def paired_bootstrap(y, p_candidate, p_champion, resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                     n_bins: int = 10) -> tuple[dict[str, tuple[float, float]], int]:
    """Percentile intervals of ``metric(candidate) - metric(champion)`` over paired, stratified resamples.

    Args:
        y: labels (0/1) of the rows both models scored; both classes present.
        p_candidate, p_champion: each model's calibrated probabilities for the same rows, in the same order.
        resamples: wanted; fewer on very large sets (``resamples_for``).
        seed: same seed, same rows → same interval.

    Returns:
        ``{metric: (low, high)}`` of the difference, and the number of resamples drawn.

    Raises:
        ValueError: lengths differ, or a class is absent.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    a = np.asarray(p_candidate, dtype=np.float64).ravel()
    b = np.asarray(p_champion, dtype=np.float64).ravel()
    if not (y.size == a.size == b.size):
        raise ValueError(f"labels ({y.size}) and the two models' scores ({a.size}, {b.size}) differ in length")
    if y.min(initial=1) != 0 or y.max(initial=0) != 1:
        raise ValueError("a paired bootstrap of ROC-AUC needs both classes")
    draws = resamples_for(y.size, resamples)
    rng = np.random.default_rng(seed)
    cand, champ = _Sorted(y, a, n_bins), _Sorted(y, b, n_bins)
    chunk = max(1, CHUNK_CELLS // y.size)
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in BOOTSTRAP_METRICS}
    for start in range(0, draws, chunk):
        w = _counts(y, min(chunk, draws - start), rng)
        ma, mb = cand.metrics(w), champ.metrics(w)
        for m in BOOTSTRAP_METRICS:
            diffs[m].append(ma[m] - mb[m])
    tail = (1.0 - confidence) / 2
    out = {}
    for m in BOOTSTRAP_METRICS:
        lo, hi = np.quantile(np.concatenate(diffs[m]), [tail, 1.0 - tail])
        out[m] = (float(lo), float(hi))
    return out, draws


def worse_by(metric: str, difference: float) -> float:
    """How much worse the candidate is than the champion (negative: better), from candidate − champion."""
    return -difference if HIGHER_IS_BETTER[metric] else difference


def worse_by_interval(metric: str, interval: tuple[float, float]) -> tuple[float, float]:
    lo, hi = worse_by(metric, interval[0]), worse_by(metric, interval[1])
    return (min(lo, hi), max(lo, hi))
