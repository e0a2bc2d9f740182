import numpy as np
import pytest

from tasks.release.evaluate import EvalRows, Evaluation
from tasks.release.gate import NOT_SAME_ROWS, evaluate_gate
from tasks.settings import Bound, GateSettings
from testkit.labels import labels_at_rate

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
    assert result.comparison["metrics"]["roc_auc"]["worse_by"] == 0.9 - 0.85
    # Without evaluation rows the comparison is each version's CV metrics, and says so.
    assert result.comparison["basis"] == "cross-validation" and result.comparison["like_for_like"] is False
    assert result.notes == [f"comparison with champion version 3: {NOT_SAME_ROWS}"]
    assert all(NOT_SAME_ROWS in r for r in result.reasons)


def test_small_changes_within_threshold_pass():
    champion = {"roc_auc": 0.855, "pr_auc": 0.61, "brier": 0.115, "ece": 0.01}
    assert evaluate_gate(GOOD, SETTINGS, champion, "3").passed


def test_missing_metric_fails_rather_than_passes():
    result = evaluate_gate({"roc_auc": 0.9}, SETTINGS)
    assert not result.passed and "pr_auc: not measured" in result.reasons



ROWS = EvalRows("eval-data", "eval.csv", 400, 120, "--eval-data eval.csv")
CANDIDATE_ROWS = {"roc_auc": 0.80, "pr_auc": 0.55, "brier": 0.15, "ece": 0.03}


def _paired(champion: dict, intervals: dict, **kw) -> Evaluation:
    diff = {m: CANDIDATE_ROWS[m] - champion[m] for m in CANDIDATE_ROWS}
    return Evaluation(rows=ROWS, candidate=CANDIDATE_ROWS, champion_version="3", champion=champion, difference=diff,
                      interval=intervals, resamples=1000, confidence=0.95, **kw)


CV_CHAMPION = {"roc_auc": 0.99, "pr_auc": 0.99, "brier": 0.01, "ece": 0.001}   # would fail every CV comparison
QUIET = {"roc_auc": (-0.01, 0.01), "pr_auc": (-0.02, 0.02), "brier": (-0.01, 0.01), "ece": (-0.01, 0.01)}


def test_the_same_rows_replace_the_cross_validated_comparison():
    champion = {"roc_auc": 0.805, "pr_auc": 0.56, "brier": 0.149, "ece": 0.035}
    result = evaluate_gate(GOOD, SETTINGS, CV_CHAMPION, "3", _paired(champion, QUIET))
    assert result.passed, result.reasons
    comp = result.comparison
    assert comp["basis"] == "same rows" and comp["like_for_like"] and comp["rows"]["n_rows"] == 400
    assert comp["rows"]["origin"] == "eval-data" and comp["resamples"] == 1000
    roc = comp["metrics"]["roc_auc"]
    assert roc["candidate"] == 0.80 and roc["champion"] == 0.805 and roc["interval"] == [-0.01, 0.01]
    assert roc["difference"] == pytest.approx(-0.005) and roc["worse_by"] == pytest.approx(0.005)
    assert roc["verdict"] == "ok"


def test_a_regression_the_rows_show_fails_with_its_interval():
    champion = {"roc_auc": 0.83, "pr_auc": 0.55, "brier": 0.12, "ece": 0.03}
    intervals = {**QUIET, "roc_auc": (-0.05, -0.01), "brier": (0.01, 0.05)}    # all worse, both
    result = evaluate_gate(GOOD, SETTINGS, None, "3", _paired(champion, intervals))
    assert not result.passed and len(result.reasons) == 2
    assert result.reasons[0].startswith("roc_auc on the same 400 rows: 0.8000 against champion version 3's 0.8300, "
                                        "0.0300 worse (allowed change 0.01); 95% interval of the difference "
                                        "-0.0500 to -0.0100, all of it worse")
    assert result.reasons[1].startswith("brier on the same 400 rows") and "+0.0100 to +0.0500" in result.reasons[1]
    assert result.comparison["metrics"]["roc_auc"]["verdict"] == "REGRESSION"


def test_a_change_beyond_the_allowed_one_that_the_rows_cannot_tell_from_none_is_a_note():
    champion = {"roc_auc": 0.83, "pr_auc": 0.55, "brier": 0.15, "ece": 0.03}
    result = evaluate_gate(GOOD, SETTINGS, None, "3", _paired(champion, {**QUIET, "roc_auc": (-0.07, 0.004)}))
    assert result.passed and result.reasons == []
    assert result.comparison["metrics"]["roc_auc"]["verdict"] == "cannot tell"
    assert len(result.notes) == 1 and "cannot tell the two apart" in result.notes[0]


def test_a_significant_change_within_the_allowed_one_passes():
    champion = {"roc_auc": 0.805, "pr_auc": 0.55, "brier": 0.15, "ece": 0.03}
    result = evaluate_gate(GOOD, SETTINGS, None, "3", _paired(champion, {**QUIET, "roc_auc": (-0.008, -0.002)}))
    assert result.passed and result.comparison["metrics"]["roc_auc"]["verdict"] == "ok"


def test_bounds_still_apply_to_the_cross_validated_metrics():
    champion = dict(CANDIDATE_ROWS)
    bad_cv = {**GOOD, "roc_auc": 0.65}
    result = evaluate_gate(bad_cv, SETTINGS, None, "3", _paired(champion, QUIET))
    assert result.reasons == ["roc_auc 0.6500 is below the minimum 0.7"]


def test_a_champion_whose_export_cannot_be_loaded_fails_closed():
    ev = Evaluation(rows=ROWS, candidate=CANDIDATE_ROWS, champion_version="3", champion_unavailable=True,
                    champion_problem="its export could not be loaded: version 3 ... could not be downloaded")
    result = evaluate_gate(GOOD, SETTINGS, CV_CHAMPION, "3", ev)
    assert not result.passed and len(result.reasons) == 1
    assert result.reasons[0].startswith("champion version 3 could not be scored on the evaluation rows (its export "
                                        "could not be loaded")
    assert "does not pass a comparison it could not make" in result.reasons[0]
    assert result.comparison["like_for_like"] is False and result.comparison["metrics"] == {}


def test_a_champion_of_another_contract_falls_back_to_cross_validation_flagged():
    ev = Evaluation(rows=ROWS, candidate=CANDIDATE_ROWS, champion_version="3",
                    champion_problem="it cannot score these rows: it takes 'region', a column the evaluation rows "
                                     "do not have")
    champion = {"roc_auc": 0.855, "pr_auc": 0.61, "brier": 0.115, "ece": 0.01}
    result = evaluate_gate(GOOD, SETTINGS, champion, "3", ev)
    assert result.passed
    assert result.comparison["basis"] == "cross-validation" and not result.comparison["like_for_like"]
    assert "'region'" in result.comparison["note"] and NOT_SAME_ROWS in result.comparison["note"]
    assert len(result.notes) == 1 and "was not scored on the evaluation rows" in result.notes[0]


def test_first_model_with_evaluation_rows_has_nothing_to_compare():
    result = evaluate_gate(GOOD, SETTINGS, None, None, Evaluation(rows=ROWS, candidate=CANDIDATE_ROWS))
    assert result.passed and result.comparison == {} and result.notes == []


def _calibrated_scores(rate: float, slope: float, n: int = 100_000, seed: int = 0):
    """Labels drawn from calibrated probabilities sigmoid(a + slope * x) whose mean is ``rate``: the same
    ranking power (slope) on any positive rate."""
    rng = np.random.default_rng(seed)
    y, p = labels_at_rate(slope * rng.normal(size=n), rate, rng)
    return y.astype(int), p


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.2, 0.5])
def test_the_default_bounds_mean_the_same_on_any_positive_rate(rate):
    """A calibrated model of ROC-AUC about 0.73 passes the default gate at 2 % positives as at 50 %; one that
    knows nothing (its probabilities are the base rate plus noise) fails it at every rate, and each reason says
    what the relative figure was computed from. The old absolute pr_auc >= 0.3 failed the first at 2 and 5 %."""
    from tasks.metrics import binary_metrics

    y, p = _calibrated_scores(rate, slope=0.9)
    useful = binary_metrics(y, p)
    assert 0.70 < useful["roc_auc"] < 0.76
    assert evaluate_gate(useful, GateSettings()).passed
    assert (useful["pr_auc"] >= 0.3) == (rate >= 0.2)     # what an absolute PR-AUC floor did

    noise = np.random.default_rng(1).normal(0, 0.3 * min(rate, 1 - rate), y.size)
    useless = binary_metrics(y, np.clip(y.mean() + noise, 1e-4, 1 - 1e-4))
    reasons = evaluate_gate(useless, GateSettings()).reasons
    assert any(r.startswith("roc_auc") for r in reasons)
    lift = [r for r in reasons if r.startswith("pr_auc_lift")]
    assert lift and f"/ positive rate {y.mean():.4f})" in lift[0] and "below the minimum 1.25" in lift[0]
    assert any(r.startswith("brier_skill") and "below the minimum 0" in r for r in reasons)
