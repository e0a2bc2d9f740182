"""Stage 2: calibrate the network's scores on out-of-fold predictions, choosing the calibrator.

The calibrator is fitted on out-of-fold scores only, so it never sees a score the
network produced for a row it was trained on. The "after" metrics are themselves
cross-fitted: each fold's scores are calibrated by a calibrator fitted on the other
folds, so the reported ECE is not measured on the calibrator's own training data.

Every candidate (none, sigmoid, beta, isotonic) is measured that way on the same folds and
reported side by side. ``auto`` chooses by cross-fitted Brier score, a proper scoring rule that
rewards both calibration and sharpness, with the one-standard-error rule (Breiman et al., CART,
1984): the simplest candidate whose Brier is within ``SE_RULE`` standard errors of the lowest one,
the standard error being that of the paired per-row difference in squared error. Simplicity is
the order of ``CANDIDATES``; an exact tie goes to the simpler one. So a calibrator that fits noise
(isotonic on few rows, or anything on scores that are already calibrated) is not chosen over a
simpler one it does not beat by more than chance.

Brier is a blunt test of calibration: on a few hundred rows a raw score whose ECE is far beyond what a
calibrated model could show by chance can still be within one standard error of Platt scaling's Brier
(anes96 in bench/README.md: "none" at ECE 0.035, above every one of 2,000 draws of a perfectly calibrated
model with the same scores; sigmoid at 0.016). So before the Brier rule, a candidate whose cross-fitted
probabilities fail a calibration test is set aside: the test asks how often labels drawn from the
probabilities themselves (a model that is exactly right) give an ECE at least as large
(``calibration_p_value``); below ``CALIBRATION_TEST_LEVEL`` the candidate is not chosen, unless every
candidate fails.

Every calibrator keeps the order of the raw scores (the shipped isotonic map through a small
blend with the raw score), so after calibration ROC-AUC and PR-AUC are those of the shipped map
on the out-of-fold rows, equal to the raw scores' (``keeps_ranking`` checks it; a map that ties
rows of different labels falls back to the cross-fitted figures). Brier, ECE and log-loss are
always cross-fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from serving.contract.calibration import (
    METHODS,
    BetaCalibrator,
    Calibrator,
    IdentityCalibrator,
    IsotonicCalibrator,
    SigmoidCalibrator,
    beta_features,
    logit,
)
from tasks.metrics import binary_metrics, chance_relative, ece, reliability_bins

AUTO = "auto"
CANDIDATES = METHODS          # simplest first: none, sigmoid (2 parameters), beta (3), isotonic
SE_RULE = 1.0                 # auto: within this many standard errors of the best Brier counts as a tie
ISOTONIC_TIE_BREAK = 1e-3     # weight of the raw score in the shipped isotonic map (keeps the ranking)
LOG_LOSS_CLIP = 1e-15
CALIBRATION_TEST_LEVEL = 0.01  # auto: a candidate whose ECE a calibrated model reaches less often is set aside
CALIBRATION_TEST_DRAWS = 2000


@dataclass(frozen=True)
class CalibrationResult:
    method: str                   # the calibrator shipped (metadata's calibrator_method)
    calibrator: Calibrator
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    oof_calibrated: np.ndarray   # cross-fitted calibrated out-of-fold probabilities
    diagram: Path | None = None
    requested: str = ""           # the configured method: auto or one of CANDIDATES
    # Cross-fitted metrics of every candidate on the same folds: roc_auc, pr_auc, brier, ece, log_loss, and
    # brier_se (the standard error of its Brier difference to the lowest Brier, which the choice uses).
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str = ""

    @property
    def brief(self) -> dict:
        """What a report shows: the choice, why, ECE before and after, and every candidate's metrics."""
        return {"method": self.method, "requested": self.requested or self.method, "reason": self.reason,
                "ece_before": self.metrics_before["ece"], "ece_after": self.metrics_after["ece"],
                "candidates": self.candidates}

    @property
    def summary(self) -> dict:
        return {**self.brief, "metrics_before": self.metrics_before, "metrics_after": self.metrics_after,
                "params": self.calibrator.params()}


def fit_calibrator(method: str, raw: np.ndarray, y: np.ndarray, model_digest: str = "") -> Calibrator:
    """Fit one calibrator on raw scores: none, sigmoid (Platt), beta or isotonic.

    Raises:
        ValueError: an unknown method.
    """
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y)
    if method == "none":
        return IdentityCalibrator(model_digest)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        return IsotonicCalibrator(tuple(iso.X_thresholds_), tuple(iso.y_thresholds_), model_digest,
                                  ISOTONIC_TIE_BREAK)
    if method == "sigmoid":
        a, b = _logistic(logit(raw).reshape(-1, 1), y)
        return SigmoidCalibrator(a[0], b, model_digest)
    if method == "beta":
        return BetaCalibrator(*_fit_beta(raw, y), model_digest)
    raise ValueError(f"unknown calibration method {method!r}; expected one of {', '.join(CANDIDATES)}")


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0])


def _fit_beta(raw: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Kull et al.'s fit: logistic regression on (ln p, -ln(1 - p)); a coefficient below zero would make the
    map non-monotone, so it is fixed at zero and the other refitted alone."""
    ln_p, ln_q = beta_features(raw)
    (a, b), c = _logistic(np.column_stack([ln_p, ln_q]), y)
    if a < 0:
        (b,), c = _logistic(ln_q.reshape(-1, 1), y)
        a = 0.0
    elif b < 0:
        (a,), c = _logistic(ln_p.reshape(-1, 1), y)
        b = 0.0
    return float(max(a, 0.0)), float(max(b, 0.0)), c


def cross_fitted(method: str, raw: np.ndarray, y: np.ndarray,
                 folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = np.empty_like(raw, dtype=np.float64)
    for tr, va in folds:
        out[va] = fit_calibrator(method, raw[tr], y[tr])(raw[va])
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_p_value(y: np.ndarray, p: np.ndarray, n_bins: int = 10, draws: int = CALIBRATION_TEST_DRAWS,
                        seed: int = 0) -> float:
    """How often a model whose probabilities ``p`` are exactly right shows a 10-bin (equal-width) ECE at least as
    large as the one measured against ``y``: a parametric bootstrap of the ECE under perfect calibration.

    In bin b the positive count of such a model has mean Σp and variance Σp(1-p) (a sum of Bernoullis), so
    its |observed - predicted| is drawn as sd_b |Z| with Z standard normal; the draw's ECE is Σ_b sd_b |Z_b| / n.
    Seeded: the same scores give the same answer.
    """
    s = np.asarray(p, dtype=np.float64)
    idx = np.clip((s * n_bins).astype(int), 0, n_bins - 1)          # the bins of tasks.metrics.ece
    sd = np.sqrt(np.bincount(idx, weights=s * (1 - s), minlength=n_bins))
    simulated = np.abs(np.random.default_rng(seed).standard_normal((draws, n_bins))) @ sd / max(s.size, 1)
    return float(np.mean(simulated >= ece(y, s, n_bins, "width")))


def choose(y: np.ndarray, scores: dict[str, np.ndarray], n_bins: int = 10,
           p_values: dict[str, float] | None = None) -> tuple[str, dict[str, float], str]:
    """The one-standard-error rule on cross-fitted Brier scores, among the candidates that pass the calibration
    test (see the module docstring).

    Args:
        scores: each candidate's cross-fitted probabilities, simplest candidate first.
        p_values: each candidate's ``calibration_p_value``, when the caller has them already.

    Returns:
        (the chosen candidate, each candidate's standard error of its Brier difference to the best, why).
    """
    y = np.asarray(y, dtype=np.float64)
    if p_values is None:
        p_values = {name: calibration_p_value(y, p, n_bins) for name, p in scores.items()}
    failed = [name for name in scores if p_values[name] < CALIBRATION_TEST_LEVEL]
    eligible = [name for name in scores if name not in failed] or list(scores)
    sq = {name: (p - y) ** 2 for name, p in scores.items()}
    brier = {name: float(e.mean()) for name, e in sq.items()}
    best = min(eligible, key=lambda name: (brier[name], list(scores).index(name)))
    se = {name: float(np.std(e - sq[best], ddof=1) / np.sqrt(e.size)) if e.size > 1 else 0.0
          for name, e in sq.items()}
    chosen = next(name for name in eligible if brier[name] - brier[best] <= SE_RULE * se[name])
    if chosen == best:
        why = f"lowest cross-fitted Brier ({brier[best]:.5f})"
    else:
        why = (f"simplest within {SE_RULE:g} SE of the lowest cross-fitted Brier ({best}, {brier[best]:.5f}): "
               f"{brier[chosen]:.5f}, +{brier[chosen] - brier[best]:.5f} <= {SE_RULE * se[chosen]:.5f}")
    if failed and len(failed) < len(scores):
        why += "; set aside, failing the calibration test: " + ", ".join(
            f"{name} (ECE {ece(y, scores[name], n_bins, 'width'):.4f}, p = {p_values[name]:.4f})" for name in failed)
    elif failed:
        why += "; every candidate fails the calibration test"
    return chosen, se, why


def calibrate(raw: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], method: str,
              n_bins: int = 10, diagram_path: Path | None = None) -> CalibrationResult:
    """Measure every candidate cross-fitted on ``folds``, take ``method`` (or choose one when it is ``auto``)
    and fit it on all out-of-fold scores.

    Raises:
        ValueError: an unknown method.
    """
    if method != AUTO and method not in CANDIDATES:
        raise ValueError(f"unknown calibration method {method!r}; expected auto or one of {', '.join(CANDIDATES)}")
    from sklearn.metrics import roc_auc_score

    raw = np.asarray(raw, dtype=np.float64)
    scores = {name: cross_fitted(name, raw, y, folds) for name in CANDIDATES}
    fitted = {name: fit_calibrator(name, raw, y) for name in CANDIDATES}
    p_values = {name: calibration_p_value(y, p, n_bins) for name, p in scores.items()}
    best, se, why = choose(y, scores, n_bins, p_values)
    chosen, reason = (best, f"auto: {why}") if method == AUTO else (method, "configured")
    after = {name: _after(fitted[name], raw, y, p, n_bins) for name, p in scores.items()}
    candidates = {name: {**{k: after[name][k] for k in ("roc_auc", "pr_auc", "brier", "ece")},
                         "log_loss": log_loss(y, p), "brier_se": se[name],
                         "calibration_p": p_values[name],
                         "roc_auc_cross_fitted": float(roc_auc_score(y, p))}
                  for name, p in scores.items()}
    result = CalibrationResult(method=chosen, calibrator=fitted[chosen],
                               metrics_before=binary_metrics(y, raw, n_bins), metrics_after=after[chosen],
                               oof_calibrated=scores[chosen], requested=method, candidates=candidates,
                               reason=reason)
    if diagram_path is not None:
        reliability_diagram(y, raw, scores[chosen], n_bins, diagram_path, chosen)
        result = replace(result, diagram=diagram_path)
    return result


def keeps_ranking(calibrator: Calibrator, raw: np.ndarray, y: np.ndarray) -> bool:
    """Whether the map is non-decreasing on these scores and ties no rows of different labels that the raw
    score had apart: then every positive-negative pair is ordered as the raw score ordered it, so ROC-AUC
    is the raw score's exactly, and the map's own fit to these rows cannot have raised it."""
    order = np.argsort(raw, kind="stable")
    r, p, labels = raw[order], calibrator(raw[order]), np.asarray(y)[order]
    steps = np.diff(p)
    if np.any(steps < 0):
        return False
    starts = np.r_[0, np.flatnonzero(steps > 0) + 1]     # runs of equal probability
    spread = np.maximum.reduceat(r, starts) > np.minimum.reduceat(r, starts)
    mixed = np.maximum.reduceat(labels, starts) != np.minimum.reduceat(labels, starts)
    return not np.any(spread & mixed)


def _after(calibrator: Calibrator, raw: np.ndarray, y: np.ndarray, cross_fitted_p: np.ndarray,
           n_bins: int) -> dict[str, float]:
    """The metrics after calibration: cross-fitted, except the ranking ones (ROC-AUC, PR-AUC) when the map
    fitted on all out-of-fold scores (the one shipped) keeps their ranking (``keeps_ranking``); those are
    then the shipped pair's ranking of the out-of-fold rows, where the cross-fitted figures would rank rows
    of different folds through different maps that never ship (each candidate's cross-fitted ROC-AUC is
    reported beside)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    after = binary_metrics(y, cross_fitted_p, n_bins)
    if keeps_ranking(calibrator, raw, y):
        shipped = calibrator(raw)
        after |= {"roc_auc": float(roc_auc_score(y, shipped)), "pr_auc": float(average_precision_score(y, shipped))}
        after |= chance_relative(after, after["positive_rate"])   # the lift follows the PR-AUC it is of
    return after


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
