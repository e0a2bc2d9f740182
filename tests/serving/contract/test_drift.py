"""Drift and calibration from what a server counted: PSI, the prediction distribution, label metrics."""

from __future__ import annotations

import numpy as np
import pytest

from serving.contract.binning import bin_fractions, quantile_edges
from serving.contract.drift import feature_drift, label_metrics, prediction_drift
from serving.monitoring.recorder import LabelHist
from tasks.metrics import binary_metrics

pytestmark = pytest.mark.unit


def _reference(values, n_bins=10):
    edges = quantile_edges(values, n_bins)
    return edges, {"numeric": {"x": {"edges": edges, "fractions": bin_fractions(values, edges), "null_fraction": 0.0}},
                   "categorical": {"c": {"categories": ["a", "b"], "frequencies": {"a": 0.75, "b": 0.25},
                                         "null_fraction": 0.0}}}


def _window(edges, values, cats: dict[str, int]):
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).tolist() + [0]
    return {"features": {"x": {"kind": "numeric", "edges": edges, "counts": counts},
                         "c": {"kind": "categorical", "categories": ["a", "b"],
                               "counts": [cats.get("a", 0), cats.get("b", 0), cats.get("unseen", 0), 0]}}}


def test_same_population_is_stable_and_a_shift_is_not():
    rng = np.random.default_rng(1)
    edges, ref = _reference(rng.normal(size=20_000))
    same = feature_drift(_window(edges, rng.normal(size=2000), {"a": 1500, "b": 500}), ref, 200)
    assert same["x"]["psi"] < 0.05 and same["c"]["psi"] < 1e-9
    shifted = feature_drift(_window(edges, rng.normal(1.0, size=2000), {"a": 500, "b": 500, "unseen": 1000}), ref,
                            200)
    assert shifted["x"]["psi"] > 0.25 and shifted["c"]["psi"] > 0.25
    assert shifted["c"]["smoothed_bins"] == 1        # unseen: empty in training, floored at epsilon


def test_a_small_sample_says_not_enough_data():
    rng = np.random.default_rng(2)
    edges, ref = _reference(rng.normal(size=5000))
    out = feature_drift(_window(edges, rng.normal(size=50), {"a": 50}), ref, 200)
    assert out["x"]["psi"] is None and out["x"]["status"].startswith("not enough data")


def test_bins_that_differ_from_the_reference_are_not_compared():
    edges, ref = _reference(np.arange(100.0))
    out = feature_drift(_window([1.0, 2.0], np.arange(300.0), {}), ref, 10)
    assert out["x"]["psi"] is None and "other bins" in out["x"]["status"]


def test_prediction_distribution_against_the_training_baseline():
    ref = {"prediction": {"edges": [0.5], "fractions": [0.8, 0.2], "mean": 0.3, "std": 0.1, "extreme_fraction": 0.05}}
    p = np.r_[np.full(500, 0.5), np.full(500, 0.99)]
    window = {"prediction": {"edges": [0.5], "counts": [0, 1000], "n": 1000, "sum": float(p.sum()),
                             "sum_squares": float((p**2).sum()), "extremes": 500}}
    out = prediction_drift(window, ref, 100)
    assert out["mean"] == pytest.approx(0.745) and out["mean_shift"] == pytest.approx(0.445)
    assert out["variance"] == pytest.approx(p.var()) and out["variance_change"] == pytest.approx(p.var() / 0.01 - 1)
    assert out["extreme_share"] == 0.5 and out["psi"] > 1


def test_label_metrics_from_histograms_match_the_row_level_ones():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(p.size) < p**1.5).astype(int)
    hist = LabelHist()
    for pi, yi in zip(p.tolist(), y.tolist()):
        hist.add(pi, yi)
    got = label_metrics([hist.to_dict()])
    want = binary_metrics(y, p)
    assert got["n"] == 20_000 and got["positives"] == int(y.sum())
    assert got["ece"] == pytest.approx(want["ece"], abs=1e-6)                     # same bins, exact
    assert got["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-3)             # 200 bins: ties within a bin
    assert got["precision"] == pytest.approx(y[p >= 0.5].mean(), abs=1e-6)
    assert got["recall"] == pytest.approx((p[y == 1] >= 0.5).mean(), abs=1e-6)
