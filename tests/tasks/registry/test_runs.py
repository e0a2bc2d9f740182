"""What the MLflow run records about the calibration choice."""

import numpy as np
import pytest

from tasks.registry.runs import calibration_record
from tasks.training.calibrate import CANDIDATES, calibrate

pytestmark = pytest.mark.unit


def test_the_run_records_the_requested_method_the_reason_and_every_candidate_side_by_side():
    rng = np.random.default_rng(0)
    truth = rng.random(1500)
    y = (rng.random(truth.size) < truth).astype(int)
    folds = [(np.setdiff1d(np.arange(1500), va), va) for va in np.array_split(rng.permutation(1500), 3)]
    cal = calibrate(truth**2, y, folds, "auto", 10)
    params, metrics = calibration_record(cal)
    assert params == {"calibration.requested": "auto", "calibration.reason": cal.reason}
    for name in CANDIDATES:
        for key in ("roc_auc", "pr_auc", "brier", "ece", "log_loss", "brier_se"):
            assert metrics[f"calibration_{name}_{key}"] == cal.candidates[name][key]
    assert metrics[f"calibration_{cal.method}_brier"] == cal.metrics_after["brier"]
