"""Choosing the calibrator: synthetic raw scores whose distortion is known, no network needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from serving.contract.calibration import IdentityCalibrator, IsotonicCalibrator, dump_calibrator, load_calibrator
from serving.contract.digest import sha256_file
from tasks.metrics import binary_metrics
from tasks.training.calibrate import (
    CANDIDATES,
    ISOTONIC_TIE_BREAK,
    calibrate,
    calibration_p_value,
    choose,
    fit_calibrator,
    keeps_ranking,
)

pytestmark = pytest.mark.unit


def _folds(n: int, rng: np.random.Generator, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.setdiff1d(np.arange(n), va), va) for va in np.array_split(rng.permutation(n), k)]


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _calibrated(rng, n):
    """Scores that already are the probabilities (float32, as the network gives them)."""
    truth = _sigmoid(rng.normal(0, 1.5, n))
    return truth.astype(np.float32), (rng.random(n) < truth).astype(int)


def _logistic_distortion(rng, n):
    """Over-confident and shifted on the logit scale: exactly what Platt scaling undoes."""
    z = rng.normal(0, 1.5, n)
    return _sigmoid(2 * z + 1).astype(np.float32), (rng.random(n) < _sigmoid(z)).astype(int)


def _staircase(rng, n):
    """The true probability jumps at two raw scores: no smooth map through the logit follows that."""
    raw = rng.random(n)
    truth = np.select([raw < 0.3, raw < 0.7], [0.05, 0.5], 0.95)
    return raw.astype(np.float32), (rng.random(n) < truth).astype(int)


@pytest.mark.parametrize(("make", "n", "expected"), [(_logistic_distortion, 4000, "sigmoid"),
                                                     (_staircase, 6000, "isotonic")],
                         ids=["logistic->sigmoid", "staircase->isotonic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_chooses_the_calibrator_the_distortion_calls_for(make, n, expected, seed):
    rng = np.random.default_rng(seed)
    raw, y = make(rng, n)
    cal = calibrate(raw, y, _folds(n, rng), "auto", 10)
    assert cal.method == expected, cal.reason
    assert cal.calibrator.method == expected and cal.requested == "auto" and cal.reason.startswith("auto: ")
    assert list(cal.candidates) == list(CANDIDATES)
    # What is reported as "after" is the chosen candidate's cross-fitted row, and it beats the raw scores
    # without costing ranking.
    assert cal.metrics_after["brier"] == cal.candidates[expected]["brier"] < cal.metrics_before["brier"]
    assert cal.metrics_after["roc_auc"] == cal.metrics_before["roc_auc"]


def test_auto_leaves_calibrated_scores_alone():
    """On scores that already are probabilities no calibrator is better than chance can make it look: the
    one-standard-error rule keeps "none" nearly always, and whatever it takes instead is no worse than raw."""
    chosen = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        raw, y = _calibrated(rng, 4000)
        cal = calibrate(raw, y, _folds(4000, rng), "auto", 10)
        none = cal.candidates["none"]
        assert cal.metrics_after["brier"] <= none["brier"], cal.reason
        chosen.append(cal.method)
    assert chosen.count("none") >= 6, chosen


def test_every_candidate_is_reported_side_by_side_even_when_the_method_is_configured():
    rng = np.random.default_rng(3)
    raw, y = _logistic_distortion(rng, 3000)
    cal = calibrate(raw, y, _folds(3000, rng), "isotonic", 10)
    assert (cal.method, cal.requested, cal.reason) == ("isotonic", "isotonic", "configured")
    for metrics in cal.candidates.values():
        assert set(metrics) == {"roc_auc", "pr_auc", "brier", "ece", "log_loss", "brier_se", "roc_auc_cross_fitted",
                                "calibration_p"}
        assert all(np.isfinite(v) for v in metrics.values())
        # Every shipped map keeps the network's order: its ranking of the out-of-fold rows is the raw one.
        assert (metrics["roc_auc"], metrics["pr_auc"]) == (cal.metrics_before["roc_auc"], cal.metrics_before["pr_auc"])
    assert cal.candidates["none"]["brier"] == pytest.approx(cal.metrics_before["brier"])
    assert cal.candidates["none"]["ece"] > 5 * cal.candidates["sigmoid"]["ece"]
    # metadata.json holds the summary: it must be plain JSON, and say what shipped and why.
    summary = json.loads(json.dumps(cal.summary))
    assert summary["method"] == "isotonic" and set(summary["candidates"]) == set(CANDIDATES)


def test_none_ships_an_identity_calibrator_and_reports_the_raw_metrics():
    rng = np.random.default_rng(4)
    raw, y = _calibrated(rng, 2000)
    cal = calibrate(raw, y, _folds(2000, rng), "none", 10)
    assert isinstance(cal.calibrator, IdentityCalibrator)
    assert cal.metrics_after == cal.metrics_before
    assert np.array_equal(cal.oof_calibrated, raw.astype(np.float64))


@pytest.mark.parametrize("method", CANDIDATES)
def test_the_chosen_calibrator_round_trips_bound_to_its_model(method, tmp_path):
    rng = np.random.default_rng(5)
    raw, y = _staircase(rng, 3000)
    cal = calibrate(raw, y, _folds(3000, rng), method, 10)
    path = tmp_path / "calibrator.pkl"
    dump_calibrator(cal.calibrator.bound_to("a" * 64), path)
    loaded = load_calibrator(path, sha256_file(path))
    assert loaded.method == method and loaded.model_digest == "a" * 64
    assert np.array_equal(loaded(raw), cal.calibrator(raw))


def test_isotonic_keeps_the_ranking_on_tied_data_at_a_negligible_calibration_cost():
    rng = np.random.default_rng(6)
    n = 8000
    raw = np.round(rng.beta(2, 3, n), 3)              # a thousand distinct scores: ties in the raw score too
    y = (rng.random(n) < raw**2).astype(int)
    fit, new = np.arange(n) < n // 2, np.arange(n) >= n // 2
    cal = fit_calibrator("isotonic", raw[fit], y[fit])
    plain = IsotonicCalibrator(cal.x, cal.y, "", tie_break=0.0)   # scikit-learn's map, as shipped before
    # On rows the calibrator was not fitted on, the plateaus tie rows the network ranked apart and cost AUC;
    # the blend breaks every plateau, so the AUC is the raw score's, exactly.
    before = roc_auc_score(y[new], raw[new])
    assert roc_auc_score(y[new], plain(raw[new])) < before
    assert roc_auc_score(y[new], cal(raw[new])) == before
    assert roc_auc_score(y, cal(raw)) == roc_auc_score(y, raw)
    assert np.unique(cal(raw)).size == np.unique(raw).size
    # Fitted on these rows, plain isotonic ties positives with negatives the raw score had apart (which can
    # even flatter its in-sample AUC); the shipped map does not, so its ranking of them is the raw score's.
    assert not keeps_ranking(plain, raw, y) and keeps_ranking(cal, raw, y)
    # So the release's "after" ranking metrics are the raw scores', exactly.
    result = calibrate(raw, y, _folds(n, rng), "isotonic", 10)
    for key in ("roc_auc", "pr_auc"):
        assert result.metrics_after[key] == result.metrics_before[key]
    assert result.candidates["isotonic"]["roc_auc_cross_fitted"] < result.metrics_before["roc_auc"]
    # Cross-fitted, the tie-break moves the calibration figures by no more than its weight.
    shipped, old = np.empty(n), np.empty(n)
    for tr, va in _folds(n, rng):
        fitted = fit_calibrator("isotonic", raw[tr], y[tr])
        shipped[va] = fitted(raw[va])
        old[va] = IsotonicCalibrator(fitted.x, fitted.y, "", tie_break=0.0)(raw[va])
    assert np.max(np.abs(shipped - old)) <= ISOTONIC_TIE_BREAK
    a, b = binary_metrics(y, shipped), binary_metrics(y, old)
    assert abs(a["brier"] - b["brier"]) <= 2 * ISOTONIC_TIE_BREAK
    assert abs(a["ece"] - b["ece"]) <= 2 * ISOTONIC_TIE_BREAK
    assert a["roc_auc"] > b["roc_auc"]


def test_an_exact_tie_goes_to_the_simpler_candidate():
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.2, 0.7, 0.4, 0.9, 0.6, 0.1])
    chosen, se, _why = choose(y, {"none": p, "sigmoid": p.copy(), "isotonic": p.copy()})
    assert chosen == "none" and se == {"none": 0.0, "sigmoid": 0.0, "isotonic": 0.0}


def test_a_clearly_better_complex_candidate_wins_over_simpler_ones():
    good = np.tile([0.1, 0.9], 500)
    y = (np.random.default_rng(0).random(good.size) < good).astype(int)     # good is calibrated and sharp
    chosen, _se, why = choose(y, {"none": np.full(y.size, 0.5), "isotonic": good})
    assert chosen == "isotonic" and "lowest cross-fitted Brier" in why


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(ValueError, match="'platt'.*auto or one of none, sigmoid, beta, isotonic"):
        calibrate(np.array([0.1, 0.9]), np.array([0, 1]), [], "platt")
    with pytest.raises(ValueError, match="'platt'"):
        fit_calibrator("platt", np.array([0.1, 0.9]), np.array([0, 1]))


def test_the_calibration_test_matches_drawing_labels_from_the_probabilities():
    """The bootstrap's normal shortcut against the slow way (labels drawn as Bernoulli(p), ECE each time)."""
    from tasks.metrics import ece

    rng = np.random.default_rng(4)
    p = _sigmoid(rng.normal(0, 1.5, 600))
    slow = np.array([ece((rng.random(p.size) < p).astype(int), p, 10) for _ in range(1000)])
    for measured in np.quantile(slow, [0.5, 0.9, 0.99]):
        y = np.zeros(p.size, dtype=int)    # a stand-in label vector whose ECE is `measured`: only the value matters
        fraction = float(np.mean(slow >= measured))
        import tasks.training.calibrate as module

        original = module.ece
        module.ece = lambda *_args, value=measured, **_kw: value
        try:
            assert calibration_p_value(y, p) == pytest.approx(fraction, abs=0.04)
        finally:
            module.ece = original


def test_calibrated_scores_pass_the_calibration_test_and_shifted_ones_fail():
    passed = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        raw, y = _calibrated(rng, 4000)
        passed.append(calibration_p_value(y, raw) >= 0.01)
        assert calibration_p_value(y, np.clip(raw.astype(np.float64) + 0.04, 0, 1)) < 0.01
    assert sum(passed) >= 9, passed


def test_a_raw_score_failing_the_calibration_test_is_set_aside_though_brier_cannot_tell():
    """Over-confident scores on 400 rows of a sharp model (as anes96's raw scores): their Brier is within one
    standard error of the calibrated probabilities', but their ECE is beyond what a calibrated model shows;
    "none" is set aside and the reason says why."""
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, 400)
    truth = _sigmoid(z)
    y = (rng.random(400) < truth).astype(int)
    scores = {"none": _sigmoid(1.8 * z), "sigmoid": truth}
    diff = (scores["none"] - y) ** 2 - (truth - y) ** 2
    assert diff.mean() <= np.std(diff, ddof=1) / np.sqrt(400)          # the Brier rule alone keeps "none"
    chosen, _se, why = choose(y, scores)
    assert chosen == "sigmoid" and "set aside, failing the calibration test: none (ECE" in why
    # When every candidate fails, the Brier rule decides among them all and says so.
    chosen, _se, why = choose(y, {"none": scores["none"], "sigmoid": _sigmoid(2 * z)})
    assert chosen == "none" and "every candidate fails the calibration test" in why
