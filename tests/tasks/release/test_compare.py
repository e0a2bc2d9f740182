"""PSI between two versions' reference distributions, and the comparison's table."""

from __future__ import annotations

import numpy as np
import pytest

from serving.contract.binning import bin_fractions, quantile_edges
from tasks.release.compare import feature_psi, merge_integer_bins, psi_level, rebin_integer, rebin_numeric

pytestmark = pytest.mark.unit


def _numeric(values, n_bins=10):
    v = np.asarray(values, dtype=float)
    present = v[~np.isnan(v)]
    edges = quantile_edges(v, n_bins)
    return {"edges": edges, "fractions": bin_fractions(v, edges), "null_fraction": float(np.isnan(v).mean()),
            "min": float(present.min()), "max": float(present.max())}


def test_rebinning_onto_other_edges_matches_binning_the_values():
    rng = np.random.default_rng(0)
    values = rng.normal(50, 10, 200_000)
    ref = _numeric(values, n_bins=20)
    other_edges = quantile_edges(rng.normal(50, 10, 10_000), 10)
    assert np.allclose(rebin_numeric(ref, other_edges), bin_fractions(values, other_edges), atol=0.01)
    assert sum(rebin_numeric(ref, other_edges)) == pytest.approx(1.0)


def test_psi_is_small_for_the_same_population_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    a = {"numeric": {"x": _numeric(rng.normal(0, 1, 20_000))},
         "categorical": {"c": {"categories": ["a", "b"], "frequencies": {"a": 0.5, "b": 0.5}, "null_fraction": 0.0}},
         "prediction": {"edges": [0.5], "fractions": [0.7, 0.3]}}
    same = {"numeric": {"x": _numeric(rng.normal(0, 1, 20_000))},
            "categorical": {"c": {"categories": ["a", "b"], "frequencies": {"a": 0.5, "b": 0.5},
                                  "null_fraction": 0.0}},
            "prediction": {"edges": [0.5], "fractions": [0.7, 0.3]}}
    shifted = {"numeric": {"x": _numeric(rng.normal(1, 1, 20_000))},
               "categorical": {"c": {"categories": ["a", "b", "z"], "frequencies": {"a": 0.2, "b": 0.3, "z": 0.5},
                                     "null_fraction": 0.1}},
               "prediction": {"edges": [0.5], "fractions": [0.4, 0.6]}}
    calm = feature_psi(a, same)
    assert set(calm) == {"x", "c", "__prediction__"} and max(calm.values()) < 0.01
    moved = feature_psi(a, shifted)
    assert all(psi_level(v) == "major shift" for v in moved.values()), moved


def test_integer_columns_compare_on_shared_cut_points_without_inventing_shifts():
    """Two versions trained on samples of integer data binned on their own quantile edges. Spreading a
    bin's mass over its interval reports shifts that are not there; merging onto the cut points both
    share tracks the PSI of the raw values on the champion's edges (slightly low, never inflated),
    and still sees a real shift."""
    def run(lam_b: float, seed: int = 7, pairs: int = 100):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(pairs):
            a, b = rng.poisson(8, 900).astype(float), rng.poisson(lam_b, 900).astype(float)
            ra, rb = _numeric(a), _numeric(b)
            truth = feature_psi({"numeric": {"n": ra}}, {"numeric": {"n": _numeric_on(b, ra["edges"])}})["n"]
            ours = feature_psi({"numeric": {"n": ra}}, {"numeric": {"n": rb}}, frozenset({"n"}))["n"]
            spread = feature_psi({"numeric": {"n": ra}}, {"numeric": {"n": rb}})["n"]
            out.append((truth, ours, spread))
        return np.asarray(out)

    same = run(8.0)
    truth, ours, spread = same.T
    assert ours.max() < 0.1, ours.max()                  # no "moderate shift" between samples of one population
    assert np.mean(spread >= 0.1) > 0.05                 # the interval spreading does report some
    assert np.all(ours <= truth + 0.01) and np.mean(np.abs(ours - truth)) < 0.01
    shifted = run(10.0)
    assert np.all(shifted[:, 1] >= 0.25), shifted[:, 1].min()   # Poisson 8 → 10: a major shift, still seen


def test_integer_rebinning_without_shared_cut_points_spreads_over_the_integers():
    ref = {"edges": [3.0, 5.0], "fractions": [0.3, 0.4, 0.3], "min": 0.0, "max": 7.0, "null_fraction": 0.0}
    # integers 0..2 | 3..4 | 5..7 → onto edges [4, 6]: 0..3 | 4..5 | 6..7
    assert rebin_integer(ref, [4.0, 6.0]) == pytest.approx([0.3 + 0.2, 0.2 + 0.1, 0.2])
    assert merge_integer_bins(ref, {**ref, "edges": [4.0, 6.0]}) is None
    assert merge_integer_bins(ref, {**ref, "edges": [3.0, 4.0, 5.0], "fractions": [0.3, 0.2, 0.2, 0.3]}) == \
        (pytest.approx([0.3, 0.4, 0.3]), pytest.approx([0.3, 0.4, 0.3]))


def _numeric_on(values, edges):
    """The candidate's reference as if it had been binned on ``edges`` (what re-binning should recover)."""
    ref = _numeric(values)
    return {**ref, "edges": list(edges), "fractions": bin_fractions(values, edges)}


def _version(version: str, tags: dict):
    from types import SimpleNamespace

    return SimpleNamespace(version=version, tags=tags)


def _meta(version: str, auc: float):
    from types import SimpleNamespace

    return SimpleNamespace(release=f"1.{version}.0", version=version,
                           cv_metrics={"roc_auc": auc, "pr_auc": 0.5, "brier": 0.15, "ece": 0.01},
                           calibration={"method": "none", "ece_before": 0.01, "ece_after": 0.01},
                           schema_={"columns": []}, reference={}, model_digest=f"m{version}",
                           files={"calibrator.pkl": f"c{version}"})


SAME_ROWS = {"basis": "same rows", "like_for_like": True, "note": None,
             "rows": {"n_rows": 1200, "positives": 240, "detail": "--eval-data eval.csv"},
             "resamples": 1000, "confidence": 0.95,
             "metrics": {"roc_auc": {"candidate": 0.7412, "champion": 0.7301, "difference": 0.0111,
                                     "interval": [0.0032, 0.0190], "worse_by": -0.0111, "allowed": 0.01,
                                     "verdict": "ok"}}}


def test_the_promotion_view_shows_the_gates_comparison_on_the_same_rows():
    import json

    from tasks.release.compare import compare

    tags = {"blessed": "true", "gate_comparison": json.dumps(SAME_ROWS), "gate_champion_version": "1"}
    view = compare("m", _version("2", tags), _meta("2", 0.74), _version("1", {}), _meta("1", 0.73))
    text = view.markdown()
    assert view.same_rows["against"] == "1"
    assert "Same rows: the gate's paired comparison against version 1 on 1200 rows (--eval-data eval.csv)" in text
    assert "| roc_auc | 0.730 | 0.741 | +0.011 [+0.003, +0.019] better |" in text
    assert "verdicts: roc_auc ok" in text
    assert not any("not the same rows" in n for n in view.notes)


def test_the_promotion_view_says_when_metrics_are_not_on_the_same_rows_or_the_champion_moved():
    import json

    from tasks.release.compare import compare

    plain = compare("m", _version("2", {"gate_comparison": json.dumps({"basis": "cross-validation"})}),
                    _meta("2", 0.74), _version("1", {}), _meta("1", 0.73))
    assert plain.same_rows is None and "Same rows:" not in plain.markdown()
    assert any("not the same rows" in n for n in plain.notes)
    moved = compare("m", _version("3", {"gate_comparison": json.dumps(SAME_ROWS), "gate_champion_version": "1"}),
                    _meta("3", 0.74), _version("2", {}), _meta("2", 0.73))
    assert any("against version 1, which is no longer the champion (version 2 is)" in n for n in moved.notes)
    first = compare("m", _version("1", {}), _meta("1", 0.74))
    assert first.notes == [] and first.same_rows is None
