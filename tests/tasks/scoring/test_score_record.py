"""A batch's drift, judged by the monitoring's PSI and thresholds (tasks/scoring/record.py)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.contract.binning import bin_fractions, quantile_edges
from tasks.monitoring.settings import MonitoringSettings
from tasks.scoring.record import batch_drift, drift_metrics

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(3)
TRAINING = RNG.normal(size=20_000)
EDGES = quantile_edges(TRAINING)
REFERENCE = {"numeric": {"x": {"edges": EDGES, "fractions": bin_fractions(TRAINING, EDGES), "null_fraction": 0.0}},
             "prediction": {"edges": [0.5], "fractions": [0.8, 0.2], "mean": 0.2, "std": 0.1,
                            "extreme_fraction": 0.05}}


def window(values: np.ndarray, probability: np.ndarray) -> dict:
    """What the monitoring's counts hold for these scored rows (bins, then null)."""
    counts = np.bincount(np.searchsorted(EDGES, values, side="right"), minlength=len(EDGES) + 1).tolist() + [0]
    hist = np.bincount(np.searchsorted([0.5], probability, side="right"), minlength=2).tolist()
    return {"features": {"x": {"kind": "numeric", "edges": EDGES, "counts": counts}},
            "prediction": {"edges": [0.5], "counts": hist, "n": probability.size, "sum": float(probability.sum()),
                           "sum_squares": float(np.square(probability).sum()),
                           "extremes": int(((probability < 0.05) | (probability > 0.95)).sum())}}


def test_a_batch_like_training_crosses_no_threshold():
    drift = batch_drift(window(RNG.normal(size=5000), RNG.uniform(0.1, 0.3, 5000)), REFERENCE, MonitoringSettings())
    assert drift["features"]["x"]["psi"] < 0.05 and drift["alarms"] == []
    assert set(drift_metrics(drift)) == {"psi.x", "psi.prediction"}


def test_a_shifted_batch_raises_the_monitorings_alarms():
    drift = batch_drift(window(RNG.normal(1.5, size=5000), RNG.uniform(0.6, 0.99, 5000)), REFERENCE,
                        MonitoringSettings())
    rules = {a["rule"]: a["level"] for a in drift["alarms"]}
    assert rules["psi:x"] == "critical" and rules["prediction_mean"] == "warning", rules
    assert drift["thresholds"]["psi"]["critical"] == 0.25


def test_too_few_rows_are_not_judged():
    drift = batch_drift(window(RNG.normal(3, size=50), RNG.uniform(size=50)), REFERENCE, MonitoringSettings())
    assert drift["features"]["x"]["psi"] is None and drift["alarms"] == []
