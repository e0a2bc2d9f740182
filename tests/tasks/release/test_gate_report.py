"""The release report's gate part: the paired comparison table, the NOT-like-for-like flag, the held-out figures."""

import pytest

from tasks.release.evaluate import EvalRows, Evaluation
from tasks.release.gate import NOT_SAME_ROWS, evaluate_gate
from tasks.release.reports import release_report
from tasks.settings import GateSettings

pytestmark = pytest.mark.unit

# The report's layout, on the absolute metrics (the defaults judge the chance-relative ones).
ABSOLUTE = GateSettings(bounds={}, max_regression={"roc_auc": 0.01, "pr_auc": 0.02, "brier": 0.01, "ece": 0.02})

CV = {"roc_auc": 0.85, "pr_auc": 0.6, "brier": 0.12, "ece": 0.02}
ROWS = EvalRows("time-holdout", "data.csv (rows with day at or after 300)", 180, 50,
                "the most recent rows, held out from training: day at or after 300 (training rows until 299)")
ON_ROWS = {"roc_auc": 0.83, "pr_auc": 0.58, "brier": 0.13, "ece": 0.04}


def _summary(gate, evaluation=None) -> dict:
    return {"release": "1.1.0", "version": "2", "model_dir": "/m/2",
            "registry": {"name": "m", "version": "2", "alias": None},
            "data": {"path": "data.csv", "rows": 900, "positives": 270, "sha256": "ab" * 32},
            "gate": gate.to_dict(), "cv_metrics": CV, "calibration": {"method": "isotonic", "ece_before": 0.05,
                                                                      "ece_after": 0.02},
            "evaluation": {"rows": ROWS.to_dict(), "metrics": evaluation.candidate} if evaluation else None,
            "timings": {"train": 1.0}}


def test_the_report_shows_the_paired_comparison_on_the_same_rows():
    champion = {"roc_auc": 0.86, "pr_auc": 0.59, "brier": 0.125, "ece": 0.035}
    ev = Evaluation(rows=ROWS, candidate=ON_ROWS, champion_version="1", champion=champion,
                    difference={m: ON_ROWS[m] - champion[m] for m in ON_ROWS},
                    interval={"roc_auc": (-0.05, -0.012), "pr_auc": (-0.03, 0.05), "brier": (-0.01, 0.02),
                              "ece": (-0.01, 0.02)}, resamples=1000)
    gate = evaluate_gate(CV, ABSOLUTE, None, "1", ev)
    report = release_report(_summary(gate, ev), "http://mlflow/run")
    assert "**FAILED**" in report and "roc_auc on the same 180 rows" in report
    assert "## Champion version 1 vs candidate on the same rows" in report
    assert "180 rows (50 positive): the most recent rows, held out from training: day at or after 300" in report
    assert "| roc_auc | 0.8600 | 0.8300 | -0.0300 | -0.0500 to -0.0120 | 0.01 | REGRESSION |" in report
    assert "| pr_auc | 0.5900 | 0.5800 | -0.0100 | -0.0300 to +0.0500 | 0.02 | ok |" in report
    assert "## The shipped model on rows it was not trained on" in report
    assert "| ece | 0.0200 | 0.0400 |" in report          # cross-validated beside the shipped pair's


def test_the_report_flags_a_comparison_not_on_the_same_rows():
    gate = evaluate_gate(CV, ABSOLUTE, {"roc_auc": 0.855, "pr_auc": 0.6, "brier": 0.12, "ece": 0.02}, "1")
    report = release_report(_summary(gate), "http://mlflow/run")
    assert "## Champion version 1 vs candidate: NOT on the same rows" in report
    assert NOT_SAME_ROWS in report and "## Gate notes" in report
    assert "| roc_auc | 0.8550 | 0.8500 | -0.0050 | – | 0.01 | ok |" in report
    assert "shipped model on rows" not in report
