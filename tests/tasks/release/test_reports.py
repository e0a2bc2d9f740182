"""The release report's calibration section: the choice and every candidate side by side."""

import pytest

from tasks.release.reports import release_report

pytestmark = pytest.mark.unit


def _summary(calibration: dict) -> dict:
    return {"release": "1.0.0", "version": "1", "model_dir": "/m/1",
            "registry": {"name": "m", "version": "1", "alias": "challenger"},
            "data": {"path": "d.csv", "rows": 100, "positives": 30, "sha256": "ab" * 32},
            "gate": {"passed": True, "reasons": []}, "cv_metrics": {"roc_auc": 0.8},
            "calibration": calibration, "timings": {"train": 1.0}}


def test_the_release_report_tables_every_calibration_candidate_and_marks_the_one_shipped():
    candidates = {name: {"roc_auc": 0.81, "pr_auc": 0.6, "brier": brier, "ece": ece, "log_loss": 0.5,
                         "brier_se": 0.0}
                  for name, brier, ece in (("none", 0.2012, 0.0811), ("sigmoid", 0.1794, 0.0186),
                                           ("beta", 0.1795, 0.0179), ("isotonic", 0.1789, 0.0073))}
    report = release_report(_summary({"method": "sigmoid", "requested": "auto", "ece_before": 0.0811,
                                      "ece_after": 0.0186, "reason": "auto: simplest within 1 SE",
                                      "candidates": candidates}), "link")
    assert "| calibration: candidate | Brier | ECE | ROC-AUC | log-loss | chosen |" in report
    assert "| sigmoid | 0.1794 | 0.0186 | 0.8100 | 0.5000 | **yes** |" in report
    assert "| isotonic | 0.1789 | 0.0073 | 0.8100 | 0.5000 |  |" in report
    assert "Calibration: sigmoid, ECE 0.0811 before → 0.0186 after (auto: simplest within 1 SE)." in report


def test_a_summary_without_candidates_still_reports_the_method():
    report = release_report(_summary({"method": "isotonic", "ece_before": 0.05, "ece_after": 0.02}), "link")
    assert "Calibration: isotonic, ECE 0.0500 before → 0.0200 after." in report and "candidate" not in report
