"""The release metrics of a set of scores: scikit-learn's ranking metrics and Brier, and ECE.

ECE comes from ``serving.contract.binning`` (shared with the model server), so a model is judged by the
same binning at release time and in production.
"""

from __future__ import annotations

import numpy as np

from serving.contract.binning import ece
from serving.contract.drift import THRESHOLD


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
    return {
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "brier": float(brier_score_loss(y, s)),
        "ece": ece(y, s, n_bins, "width"),
        "ece_equal_mass": ece(y, s, n_bins, "mass"),
        # At p >= 0.5, the monitor's baseline for the guide's "precision drops > 10 points".
        "precision": float(y[predicted].mean()) if predicted.any() else 0.0,
        "recall": float(predicted[y == 1].mean()),
    }
