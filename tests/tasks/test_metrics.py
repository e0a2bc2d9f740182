import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, precision_score, recall_score, roc_auc_score

from tasks.metrics import binary_metrics, ece, equal_mass_edges, reliability_bins

pytestmark = pytest.mark.unit


def _data(seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_release_metrics_are_scikit_learns_and_the_shared_ece(seed):
    y, p = _data(seed)
    m = binary_metrics(y, p)
    rate = y.mean()
    assert m == pytest.approx({
        "roc_auc": roc_auc_score(y, p), "pr_auc": average_precision_score(y, p), "brier": brier_score_loss(y, p),
        "ece": ece(y, p, 10, "width"), "ece_equal_mass": ece(y, p, 10, "mass"),
        "precision": precision_score(y, p >= 0.5), "recall": recall_score(y, p >= 0.5), "positive_rate": rate,
        "pr_auc_lift": average_precision_score(y, p) / rate,
        "brier_skill": 1 - brier_score_loss(y, p) / brier_score_loss(y, np.full(y.size, rate)),
        "ece_relative": ece(y, p, 10, "width") / min(rate, 1 - rate)}, rel=1e-12)


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.5, 0.95])
def test_chance_scores_zero_skill_and_unit_lift_on_any_positive_rate(rate):
    """Always predicting the positive rate: Brier skill 0, ECE 0; a random ranking's PR-AUC lift is about 1."""
    rng = np.random.default_rng(3)
    y = (rng.random(40_000) < rate).astype(int)
    m = binary_metrics(y, np.full(y.size, y.mean()))
    assert m["brier_skill"] == pytest.approx(0.0, abs=1e-12) and m["ece_relative"] == pytest.approx(0.0, abs=1e-12)
    assert binary_metrics(y, rng.random(y.size))["pr_auc_lift"] == pytest.approx(1.0, abs=0.08)


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics([1, 1, 1], [0.1, 0.2, 0.3])


def _scores(seed: int, n: int = 500, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    if ties:
        p = np.round(p, 1)
    return y, p


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


def test_equal_mass_bins_have_equal_counts_without_ties():
    rng = np.random.default_rng(5)
    p = rng.random(1000)
    y = rng.integers(0, 2, 1000)
    assert [b.count for b in reliability_bins(y, p, n_bins=10, strategy="mass")] == [100] * 10


def test_equal_mass_bins_never_split_a_score_value():
    y, p = _scores(5, n=1000, ties=True)
    bins = reliability_bins(y, p, n_bins=10, strategy="mass")
    assert sum(b.count for b in bins) == 1000
    for a, b in zip(bins, bins[1:], strict=False):
        assert a.upper < b.lower          # each distinct score lies in exactly one bin
    assert len(bins) <= np.unique(p).size


def test_equal_mass_ece_does_not_depend_on_row_order():
    """Isotonic outputs are heavily tied: splitting a tie across bins by row position made the same
    scores give ECE 0.019-0.044 in five row orders."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    raw = rng.random(3000)
    y = (rng.random(raw.size) < raw**2).astype(int)
    p = IsotonicRegression(out_of_bounds="clip").fit(raw, y).predict(raw)
    assert np.unique(p).size < 100       # the ties that used to be split
    values = set()
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(p.size)
        values.add(round(ece(y[order], p[order], 10, "mass"), 12))
    assert len(values) == 1


def test_equal_mass_edges_are_score_values():
    p = np.array([0.1, 0.1, 0.1, 0.2, 0.3, 0.3, 0.4, 0.5])
    edges = equal_mass_edges(p, 4)
    assert set(edges) <= set(p) and list(edges) == sorted(set(edges))
