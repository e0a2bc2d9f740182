"""Stage 2: calibrate the network's scores on out-of-fold predictions.

The calibrator is fitted on out-of-fold scores only, so it never sees a score the
network produced for a row it was trained on. The "after" metrics are themselves
cross-fitted: each fold's scores are calibrated by a calibrator fitted on the other
folds, so the reported ECE is not measured on the calibrator's own training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.calibration import Calibrator, IsotonicCalibrator, SigmoidCalibrator, logit
from serving.metrics import ece, reliability_bins
from tasks.metrics import binary_metrics


@dataclass(frozen=True)
class CalibrationResult:
    method: str
    calibrator: Calibrator
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    oof_calibrated: np.ndarray   # cross-fitted calibrated out-of-fold probabilities
    diagram: Path | None = None

    @property
    def summary(self) -> dict:
        return {"method": self.method, "ece_before": self.metrics_before["ece"],
                "ece_after": self.metrics_after["ece"], "metrics_before": self.metrics_before,
                "metrics_after": self.metrics_after, "params": self.calibrator.params()}


def fit_calibrator(method: str, raw: np.ndarray, y: np.ndarray, model_digest: str = "") -> Calibrator:
    """Fit an isotonic or sigmoid (Platt) calibrator on raw scores."""
    raw = np.asarray(raw, dtype=np.float64)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        return IsotonicCalibrator(tuple(iso.X_thresholds_), tuple(iso.y_thresholds_), model_digest)
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit(raw).reshape(-1, 1), y)
        return SigmoidCalibrator(float(lr.coef_[0, 0]), float(lr.intercept_[0]), model_digest)
    raise ValueError(f"unknown calibration method {method!r}")


def cross_fitted(method: str, raw: np.ndarray, y: np.ndarray,
                 folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = np.empty_like(raw, dtype=np.float64)
    for tr, va in folds:
        out[va] = fit_calibrator(method, raw[tr], y[tr])(raw[va])
    return out


def calibrate(raw: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], method: str,
              n_bins: int = 10, diagram_path: Path | None = None) -> CalibrationResult:
    """Fit the calibrator on all out-of-fold scores; measure it cross-fitted."""
    calibrator = fit_calibrator(method, raw, y)
    after = cross_fitted(method, raw, y, folds)
    result = CalibrationResult(method=method, calibrator=calibrator,
                               metrics_before=binary_metrics(y, raw, n_bins),
                               metrics_after=binary_metrics(y, after, n_bins), oof_calibrated=after)
    if diagram_path is not None:
        reliability_diagram(y, raw, after, n_bins, diagram_path, method)
        result = CalibrationResult(**{**result.__dict__, "diagram": diagram_path})
    return result


def reliability_diagram(y: np.ndarray, before: np.ndarray, after: np.ndarray, n_bins: int, path: Path,
                        method: str) -> Path:
    """PNG: observed rate against mean prediction per bin, before and after, with counts below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for label, p, colour in (("network (raw)", before, "tab:orange"), (f"calibrated ({method})", after, "tab:blue")):
        bins = reliability_bins(y, p, n_bins, "width")
        ax.plot([b.mean_predicted for b in bins], [b.observed_rate for b in bins], marker="o", color=colour,
                label=f"{label}, ECE {ece(y, p, n_bins, 'width'):.4f}")
        hist.hist(p, bins=n_bins, range=(0, 1), histtype="step", color=colour, lw=1.5)
    ax.set_ylabel("observed positive rate")
    ax.set_title("Reliability (out-of-fold predictions)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("rows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
