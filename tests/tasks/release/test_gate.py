import pytest

from tasks.release.gate import evaluate_gate
from tasks.settings import Bound, GateSettings

pytestmark = pytest.mark.unit

GOOD = {"roc_auc": 0.85, "pr_auc": 0.6, "brier": 0.12, "ece": 0.02}
SETTINGS = GateSettings(bounds={"roc_auc": Bound(min=0.7), "pr_auc": Bound(min=0.3), "brier": Bound(max=0.2),
                                "ece": Bound(max=0.05)},
                        max_regression={"roc_auc": 0.01, "pr_auc": 0.02, "brier": 0.01, "ece": 0.02})


def test_first_model_judged_on_bounds_alone():
    result = evaluate_gate(GOOD, SETTINGS)
    assert result.passed and result.reasons == [] and result.comparison == {}


def test_every_failing_bound_is_reported():
    result = evaluate_gate({"roc_auc": 0.6, "pr_auc": 0.2, "brier": 0.3, "ece": 0.2}, SETTINGS)
    assert not result.passed
    assert len(result.reasons) == 4
    assert "roc_auc 0.6000 is below the minimum 0.7" in result.reasons[0]
    assert "ece 0.2000 is above the maximum 0.05" in result.reasons[3]


def test_regression_against_champion():
    champion = {"roc_auc": 0.90, "pr_auc": 0.6, "brier": 0.10, "ece": 0.02}
    result = evaluate_gate(GOOD, SETTINGS, champion, "3")
    assert not result.passed
    assert any("roc_auc 0.8500 is 0.0500 below champion version 3's 0.9000" in r for r in result.reasons)
    assert any(r.startswith("brier 0.1200 is 0.0200 above champion") for r in result.reasons)
    assert result.comparison["roc_auc"]["worse_by"] == 0.9 - 0.85


def test_small_changes_within_threshold_pass():
    champion = {"roc_auc": 0.855, "pr_auc": 0.61, "brier": 0.115, "ece": 0.01}
    assert evaluate_gate(GOOD, SETTINGS, champion, "3").passed


def test_missing_metric_fails_rather_than_passes():
    result = evaluate_gate({"roc_auc": 0.9}, SETTINGS)
    assert not result.passed and "pr_auc: not measured" in result.reasons

