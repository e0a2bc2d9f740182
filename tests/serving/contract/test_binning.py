"""PSI and the reference bins: the drift maths the pipeline and the model server share."""

import numpy as np
import pytest

from serving.contract.binning import bin_fractions, psi, quantile_edges

pytestmark = pytest.mark.unit


def test_psi_zero_for_identical_and_positive_for_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=10_000)
    edges = quantile_edges(base, 10)
    expected = bin_fractions(base, edges)
    assert sum(expected) == pytest.approx(1.0)
    assert psi(expected, expected) == 0.0
    shifted = bin_fractions(base + 0.5, edges)
    assert psi(expected, shifted) > 0.1
    # the guide's formula, computed by hand
    e, a = np.array(expected), np.array(shifted)
    assert psi(expected, shifted) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_psi_needs_the_same_bins():
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])
