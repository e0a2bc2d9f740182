"""Recalibration logic: PATCH numbering, the split of labelled rows, the paired bootstrap and the gate."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import DataValidationError
from tasks.release.labels import LabelledRows, labels_from_feedback, split_rows
from tasks.release.recalibrate import judge
from tasks.release.versioning import next_patch
from tasks.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("of", "taken", "expected"), [
    ("1.2.0", ["1.0.0", "1.1.0", "1.2.0"], "1.2.1"),
    ("1.2.0", ["1.2.0", "1.2.1", "1.3.0"], "1.2.2"),          # 1.2.1 is taken: the next free patch
    ("1.2.1", ["1.2.0", "1.2.1", "1.2.2"], "1.2.3"),          # a patch of a patch counts on
    ("2.0.0", ["1.2.5", "2.0.0", "junk", ""], "2.0.1"),       # other MAJOR.MINORs and odd tags do not count
])
def test_a_recalibration_takes_the_next_free_patch(of, taken, expected):
    assert next_patch(of, taken) == expected


def test_the_next_release_counts_from_the_highest_release_not_the_latest_version(tmp_path, migrated_mlflow_store):
    """A recalibration of an old version (1.0.1 registered after 1.1.0) must not make the next retrain 1.1.0
    again."""
    from tasks.registry import MlflowRegistry

    migrated_mlflow_store(tmp_path)
    registry = MlflowRegistry(load_settings(None, env={"PIPELINE_HOME": str(tmp_path)}))
    for release in ("1.0.0", "1.1.0", "1.0.1"):
        registry.reserve("fsh", lambda _prior, _taken, r=release: r)
    seen = []
    registry.reserve("fsh", lambda prior, taken: seen.append((prior, sorted(taken))) or "1.2.0")
    prior, taken = seen[0]
    assert (prior.release, prior.feature_schema_hash) == ("1.1.0", "fsh")
    assert taken == ["1.0.0", "1.0.1", "1.1.0"]


def _rows(n: int, positives: int, at=None, seed: int = 0) -> LabelledRows:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int64)
    y[rng.choice(n, positives, replace=False)] = 1
    return LabelledRows("labels.csv", "0" * 64, rng.random(n), y, at)


def test_dated_rows_hold_out_the_newest():
    at = np.arange(100, dtype=float)[::-1]              # row 0 is the newest
    split = split_rows(_rows(100, 50, at), 0.3, 5, seed=1)
    assert split.how == "time" and split.holdout.size == 30
    assert set(split.holdout.tolist()) == set(range(30)) and set(split.fit.tolist()) == set(range(30, 100))


def test_undated_rows_split_stratified_and_seeded():
    rows = _rows(200, 40)
    split = split_rows(rows, 0.25, 5, seed=3)
    assert split.how == "stratified" and split.holdout.size == 50
    assert rows.y[split.holdout].sum() == 10 and rows.y[split.fit].sum() == 30        # the rate kept in both
    assert not set(split.fit.tolist()) & set(split.holdout.tolist())
    assert np.array_equal(split.holdout, split_rows(rows, 0.25, 5, seed=3).holdout)
    assert not np.array_equal(split.holdout, split_rows(rows, 0.25, 5, seed=4).holdout)


def test_too_few_labels_says_how_many_there_are_and_are_needed():
    with pytest.raises(DataValidationError) as failure:
        split_rows(_rows(100, 12), 0.3, 10, seed=0)
    text = str(failure.value)
    assert "labels.csv" in text and "too few labels" in text and "100 labelled rows (12 positive)" in text
    assert "4 positive in the held-out rows" in text and "8 positive in the fitted rows" in text
    assert "at least 10 of each class" in text and "negative" not in text


def test_feedback_rows_become_dated_labelled_rows_and_none_is_a_clear_error():
    answers = {"t1": {"rows": [{"request_id": "b", "row": 0, "raw_score": 0.3, "probability": 0.2, "label": 1,
                                "scored_at": 20.0},
                               {"request_id": "a", "row": 1, "raw_score": 0.6, "probability": 0.5, "label": 0,
                                "scored_at": 10.0}]}}
    rows = labels_from_feedback(answers, "4")
    assert rows.raw.tolist() == [0.6, 0.3] and rows.y.tolist() == [0, 1] and rows.at.tolist() == [10.0, 20.0]
    assert rows.source == "feedback from target(s) t1" and len(rows.sha256) == 64
    with pytest.raises(DataValidationError, match="hold no labelled row of version 4.*POST /feedback"):
        labels_from_feedback({"t1": {"rows": []}, "t2": {"rows": []}}, "4")


@pytest.fixture
def settings(tmp_path):
    return load_settings(None, env={"PIPELINE_HOME": str(tmp_path)},
                         overrides={"recalibration.bootstrap": 200})


def test_the_gate_passes_a_better_calibration_and_lists_every_reason_against_a_worse_one(settings):
    rng = np.random.default_rng(5)
    p_true = rng.uniform(0.02, 0.98, 1500)
    y = (rng.random(1500) < p_true).astype(int)
    shifted = np.clip(p_true * 0.5 + 0.4, 0, 1)           # monotone: same ranking, far worse calibration
    passed = judge(y, shifted, p_true, settings, "4")
    assert passed.passed and passed.reasons == []
    assert passed.comparison["roc_auc"]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert passed.comparison["ece"]["interval"][1] < 0 and passed.comparison["brier"]["interval"][1] < 0
    # within the allowance passes, beyond it fails: the rule reads the difference itself
    nudged = np.clip(p_true + 0.02, 0, 1)
    worse = judge(y, p_true, nudged, settings, "4").comparison["brier"]["worse_by"]
    assert 0 < worse
    assert judge(y, p_true, nudged, load_settings(None, env={"PIPELINE_HOME": str(settings.pipeline_home)},
                 overrides={"recalibration.bootstrap": 100, "recalibration.max_regression": {
                     "brier": worse + 1e-4, "ece": 1.0, "roc_auc": 1.0}}), "4").passed
    assert not judge(y, p_true, nudged, load_settings(None, env={"PIPELINE_HOME": str(settings.pipeline_home)},
                     overrides={"recalibration.bootstrap": 100, "recalibration.max_regression": {
                         "brier": worse - 1e-4, "ece": 1.0, "roc_auc": 1.0}}), "4").passed
    failed = judge(y, p_true, shifted, settings, "4")
    assert not failed.passed and [r.split()[0] for r in failed.reasons] == ["brier", "ece"]
    assert all("version 4's" in r and "interval of the difference" in r and "allowed change" in r
               for r in failed.reasons)
    # ranking counts too: a calibrator that scrambles the order fails on roc_auc
    scrambled = judge(y, p_true, rng.permutation(p_true), settings, "4")
    assert any(r.startswith("roc_auc") for r in scrambled.reasons)
