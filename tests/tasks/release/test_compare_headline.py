"""The promotion comparison a person reads in five seconds: the headline first, then a narrow table.

The comparisons are made the way the pipeline makes them: both models score the same rows, the gate's
paired bootstrap (``evaluate_gate`` on an ``Evaluation``) is tagged on the candidate, the versions'
``metadata.json`` are real ``ModelMetadata`` with their files' digests and reference distributions.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from serving.contract.binning import bin_fractions, quantile_edges
from serving.contract.metadata import ModelMetadata
from tasks.metrics import binary_metrics
from tasks.release.bootstrap import BOOTSTRAP_METRICS, paired_bootstrap
from tasks.release.compare import compare, drift_phrase
from tasks.release.evaluate import EvalRows, Evaluation
from tasks.release.gate import evaluate_gate
from tasks.settings import GateSettings

pytestmark = pytest.mark.unit

ROWS = 3000
TRUE_LOGIT = np.random.default_rng(0).normal(-1.6, 1.5, ROWS)
Y = (np.random.default_rng(1).random(ROWS) < 1 / (1 + np.exp(-TRUE_LOGIT))).astype(int)


def scores(noise: float, seed: int, overconfident: float = 1.0) -> np.ndarray:
    """A model's calibrated probabilities: the true logit plus ``noise`` (less noise, better ranking), Platt-scaled
    on the rows; ``overconfident`` > 1 then stretches the logits (same ranking, worse calibration)."""
    from sklearn.linear_model import LogisticRegression

    logit = (TRUE_LOGIT + np.random.default_rng(seed).normal(0, noise, ROWS)).reshape(-1, 1)
    platt = LogisticRegression(C=1e6).fit(logit, Y)
    calibrated = platt.decision_function(logit)
    return 1 / (1 + np.exp(-overconfident * calibrated))


def reference(values: np.ndarray) -> dict:
    edges = quantile_edges(values, 10)
    return {"numeric": {"income": {"edges": edges, "fractions": bin_fractions(values, edges), "null_fraction": 0.0,
                                   "min": float(values.min()), "max": float(values.max())}}}


def metadata(version: str, p: np.ndarray, saved_model: str, calibrator: str, income: np.ndarray) -> ModelMetadata:
    return ModelMetadata.model_validate({
        "version": version, "release": f"1.{version}.0", "model_name": "churn", "calibrator_method": "isotonic",
        "training_date": "2026-12-01T00:00:00+00:00", "cv_metrics": binary_metrics(Y, p),
        "calibration": {"method": "isotonic", "ece_before": 0.03, "ece_after": binary_metrics(Y, p)["ece"]},
        "schema": {"columns": [{"name": "income", "type": "numeric"}]}, "schema_hash": "s", "feature_schema_hash": "f",
        "feature_list": [], "inputs": [], "golden_examples": [], "reference": reference(income),
        "files": {"saved_model/saved_model.pb": saved_model, "calibrator.pkl": calibrator},
        "model_digest": "d-" + saved_model})


def gate_tags(p_candidate: np.ndarray, p_champion: np.ndarray) -> dict[str, str]:
    """The candidate's tags as ``record_gate`` writes them after the paired comparison on the same rows."""
    settings = GateSettings()
    intervals, drawn = paired_bootstrap(Y, p_candidate, p_champion, resamples=400, seed=1)
    cand, champ = binary_metrics(Y, p_candidate), binary_metrics(Y, p_champion)
    ev = Evaluation(rows=EvalRows("eval-data", "eval.csv", ROWS, int(Y.sum()), "--eval-data eval.csv"),
                    candidate=cand, champion_version="1", champion=champ, resamples=drawn, interval=intervals,
                    difference={m: cand[m] - champ[m] for m in BOOTSTRAP_METRICS})
    gate = evaluate_gate(cand, settings, champ, "1", ev)
    return {"blessed": str(gate.passed).lower(), "gate_comparison": json.dumps(gate.comparison),
            "gate_champion_version": "1"}


def version(number: str, tags: dict):
    return SimpleNamespace(version=number, tags=tags)


INCOME = np.random.default_rng(5).lognormal(10, 0.5, 5000)
CHAMPION_P = scores(1.0, seed=11)


def view_of(p_candidate: np.ndarray, saved_model: str = "bbb", calibrator: str = "ccc", income=INCOME,
            paired: bool = True):
    champion = metadata("1", CHAMPION_P, "aaa", "ccc", INCOME)
    candidate = metadata("2", p_candidate, saved_model, calibrator, income)
    tags = gate_tags(p_candidate, CHAMPION_P) if paired else {"blessed": "true"}
    return compare("churn", version("2", tags), candidate, version("1", {}), champion)


def headline_and_table(text: str) -> tuple[list[str], list[str]]:
    """The lines above the details: the headline (right under the title) and the first table."""
    top = text.split("## Details")[0].splitlines()
    return [line for line in top[2:] if line and not line.startswith("|")][:2], [x for x in top if x.startswith("|")]


def no_zero_changes(text: str) -> bool:
    return re.search(r"[+−-]0\.0+(?![0-9])", text) is None and "PSI 0.00" not in text


def test_identical_digests_say_identical_model_and_no_zeros():
    view = view_of(CHAMPION_P, saved_model="aaa", calibrator="ccc")
    text = view.markdown()
    assert text.startswith("# Promote churn version 2?\n\n**Candidate v2 vs champion v1: identical model**")
    assert view.identical and view.to_dict()["identical"] is True
    assert no_zero_changes(text), text
    assert all(row.endswith("| no difference |") or "no difference [" in row
               for row in headline_and_table(text)[1][2:])


def test_a_better_candidate_leads_with_its_gain_and_the_interval():
    view = view_of(scores(0.5, seed=12))
    head, table = headline_and_table(view.markdown())
    auc = next(r for r in view.changes() if r["metric"] == "roc_auc")
    low, high = auc["interval"]
    assert 0 < low < auc["delta"] < high
    assert head[0].startswith("**Candidate v2 vs champion v1**: ROC-AUC +0.0") and "better" in head[0]
    assert f"[+{low:.3f}, +{high:.3f}]" in head[0] and "worse" not in head[0]
    assert "Data drift: none (max PSI " in head[1] and "the same 3000 rows, 95% interval" in head[1]
    assert table[0] == "| metric | champion v1 | candidate v2 | change |"
    assert any(row.startswith("| roc_auc |") and row.endswith("better |") for row in table)


def test_a_worse_candidate_says_worse_in_the_headline():
    view = view_of(scores(2.0, seed=13))
    head, _ = headline_and_table(view.markdown())
    assert re.search(r"ROC-AUC −0\.\d{3} \[−0\.\d{3}, −0\.\d{3}\] worse", head[0]), head[0]
    assert "better" not in head[0]


def test_a_mixed_candidate_shows_the_gain_and_the_loss():
    """Better ranking, worse calibration (stretched logits): both are in the first line."""
    view = view_of(scores(0.5, seed=12, overconfident=1.8))
    head, _ = headline_and_table(view.markdown())
    assert re.search(r"ROC-AUC \+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\] better", head[0]), head[0]
    assert re.search(r"relative ECE \+\d\.\d{3} \[\+\d\.\d{3}, \+\d\.\d{3}\] worse", head[0]), head[0]


def test_a_recalibrated_champion_says_same_network_new_calibrator():
    view = view_of(scores(1.0, seed=11, overconfident=1.8), saved_model="aaa", calibrator="ddd")
    head, _ = headline_and_table(view.markdown())
    assert not view.identical and head[1].endswith("Same network, new calibrator.")
    assert "Same network" not in headline_and_table(view_of(scores(0.5, seed=12)).markdown())[0][1]


def test_a_retrained_twin_reads_no_difference_not_zeros():
    """Another export of an equally good model (other digests): every change is inside its interval."""
    view = view_of(scores(1.0, seed=11) + np.random.default_rng(3).normal(0, 1e-4, ROWS).clip(-1e-4, 1e-4))
    text = view.markdown()
    head, _ = headline_and_table(text)
    assert head[0].startswith("**Candidate v2 vs champion v1: no difference** in ROC-AUC, PR-AUC lift")
    assert not view.identical and no_zero_changes(text), text


def test_no_champion_says_so_and_shows_the_candidates_scores():
    first = compare("churn", version("1", {"blessed": "true"}), metadata("1", CHAMPION_P, "aaa", "ccc", INCOME))
    text = first.markdown()
    head, table = headline_and_table(text)
    assert head[0] == "**Candidate v1: no champion yet**, this would be the first promotion.  "
    assert head[1].startswith("Cross-validated: ROC-AUC 0.")
    assert table[0] == "| metric | candidate |" and "## Details" in text and no_zero_changes(text)


def test_without_the_gates_rows_the_basis_says_cross_validated_and_drift_is_named():
    shifted = INCOME * 1.6
    view = view_of(scores(0.5, seed=12), income=shifted, paired=False)
    head, table = headline_and_table(view.markdown())
    assert "Data drift: major in income (" in head[1] and "cross-validated, each on its own data" in head[1]
    assert [row.split("|")[1].strip() for row in table[2:]] == ["roc_auc", "pr_auc", "brier", "ece"]


def test_the_first_screen_is_narrow_and_to_dict_keeps_everything():
    view = view_of(scores(0.5, seed=12, overconfident=1.8))
    _, table = headline_and_table(view.markdown())
    assert all(row.count("|") == 5 and len(row) <= 80 for row in table), table
    record = view.to_dict()
    assert {"model", "candidate", "champion", "metrics", "psi", "notes", "same_rows", "headline", "changes",
            "identical"} <= set(record)
    assert record["candidate"]["calibrator_sha256"] == "ccc" and record["same_rows"]["against"] == "1"
    json.dumps(record)   # the promote flow records it


@pytest.mark.parametrize(("psis", "said"), [
    ({}, "not measured"),
    ({"a": 0.0001}, "none (max PSI < 0.01)"),
    ({"a": 0.03, "b": 0.01}, "none (max PSI 0.03)"),
    ({"a": 0.14, "__prediction__": 0.02}, "moderate in a (0.14) (PSI)"),
    ({"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.12, "__prediction__": 0.5},
     "major in calibrated predictions (0.50), a (0.40), b (0.30) and 2 more (PSI)"),
])
def test_drift_in_a_few_words(psis, said):
    assert drift_phrase(psis) == said
