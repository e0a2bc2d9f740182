import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from serving.stats import (
    average_precision,
    bin_fractions,
    binary_metrics,
    brier,
    ece,
    psi,
    quantile_edges,
    reliability_bins,
    roc_auc,
)


def _data(seed: int, n: int = 500, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    if ties:
        p = np.round(p, 1)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_match_scikit_learn(seed, ties):
    y, p = _data(seed, ties=ties)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_ece_hand_computed():
    # Two equal-width bins of 10: [0.1]*4 with 1 positive (|0.25-0.1|), [0.9]*4 with 4 positives (|1-0.9|).
    y = [1, 0, 0, 0, 1, 1, 1, 1]
    p = [0.1] * 4 + [0.9] * 4
    assert ece(y, p, n_bins=10) == pytest.approx(0.5 * 0.15 + 0.5 * 0.1)


def test_ece_is_count_weighted_and_near_zero_when_calibrated():
    rng = np.random.default_rng(3)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert ece(y, p, 10, "width") < 0.005
    assert ece(y, p, 10, "mass") < 0.005
    assert ece(y, np.clip(p * 0.5, 0, 1), 10) > 0.2   # halving every probability is badly calibrated


def test_equal_mass_bins_have_equal_counts_even_with_ties():
    y, p = _data(5, n=1000, ties=True)
    bins = reliability_bins(y, p, n_bins=10, strategy="mass")
    assert [b.count for b in bins] == [100] * 10


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


def test_binary_metrics_has_the_release_metrics():
    y, p = _data(9)
    assert set(binary_metrics(y, p)) == {"roc_auc", "pr_auc", "brier", "ece", "ece_equal_mass"}
