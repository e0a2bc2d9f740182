"""PSI between two versions' reference distributions, and the comparison's table."""

from __future__ import annotations

import numpy as np
import pytest

from serving.stats import bin_fractions, quantile_edges
from tasks.compare import feature_psi, psi_level, rebin_numeric


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
