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
                         "brier_se": 0.0, "calibration_p": 0.4}
                  for name, brier, ece in (("none", 0.2012, 0.0811), ("sigmoid", 0.1794, 0.0186),
                                           ("beta", 0.1795, 0.0179), ("isotonic", 0.1789, 0.0073))}
    report = release_report(_summary({"method": "sigmoid", "requested": "auto", "ece_before": 0.0811,
                                      "ece_after": 0.0186, "reason": "auto: simplest within 1 SE",
                                      "candidates": candidates}), "link")
    assert "| calibration: candidate | Brier | ECE | calibration test p | ROC-AUC | log-loss | chosen |" in report
    assert "| sigmoid | 0.1794 | 0.0186 | 0.4000 | 0.8100 | 0.5000 | **yes** |" in report
    assert "| isotonic | 0.1789 | 0.0073 | 0.4000 | 0.8100 | 0.5000 |  |" in report
    assert "Calibration: sigmoid, ECE 0.0811 before → 0.0186 after (auto: simplest within 1 SE)." in report


def test_a_summary_without_candidates_still_reports_the_method():
    report = release_report(_summary({"method": "isotonic", "ece_before": 0.05, "ece_after": 0.02}), "link")
    assert "Calibration: isotonic, ECE 0.0500 before → 0.0200 after." in report and "candidate" not in report


def test_the_release_report_tables_the_network_search_and_marks_the_choice():
    search = {"budget_s": 300.0, "seconds": 41.25, "chosen": 1, "reason": "log-loss 0.0120 lower",
              "selected_on": "inner-validation log-loss, paired by fold",
              "candidates": [
                  {"index": 0, "changes": {}, "status": "tried", "val_loss": 0.41, "val_losses": [0.4, 0.42],
                   "val_auc": 0.8, "seconds": 20.5},
                  {"index": 1, "changes": {"embedding_sigma": 1.0}, "status": "chosen", "val_loss": 0.398,
                   "val_losses": [0.39, 0.406], "val_auc": 0.81, "seconds": 20.75},
                  {"index": 2, "changes": {"hidden_units": [128, 64], "dropout": 0.2}, "status": "skipped",
                   "val_loss": None, "val_losses": [], "val_auc": None, "seconds": None}]}
    report = release_report({**_summary({"method": "none", "ece_before": 0.01, "ece_after": 0.01}),
                             "search": search}, "link")
    assert ("Network search: candidate 1 chosen (log-loss 0.0120 lower); 41.2 s of a budget of 300 s."
            in report)
    assert "| 0 | configured | 0.4100 | 0.8000 | 20.5 | tried |" in report
    assert "| 1 | embedding_sigma=1.0 | 0.3980 | 0.8100 | 20.8 | **chosen** |" in report
    assert "| 2 | hidden_units=[128, 64], dropout=0.2 | – | – | – | not run (budget) |" in report
    assert "Network search" not in release_report(_summary({"method": "none", "ece_before": 0.01,
                                                            "ece_after": 0.01}), "link")
