"""The paired bootstrap: weighted metrics equal the metrics of the expanded rows; intervals are paired."""

import numpy as np
import pytest

from tasks.metrics import binary_metrics
from tasks.release import bootstrap
from tasks.release.bootstrap import BOOTSTRAP_METRICS, paired_bootstrap, resamples_for

pytestmark = pytest.mark.unit


def _scores(n: int, seed: int, skill: float, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    p = np.clip(0.3 + skill * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    return y, (np.round(p, 1) if ties else p)


def _weighted(y, p, counts) -> dict[str, np.ndarray]:
    """The metrics the bootstrap computes for each row of ``counts`` (resamples × rows), as it computes them."""
    return bootstrap._Sorted(np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64), 10).metrics(
        np.atleast_2d(np.asarray(counts, dtype=np.float64)))


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_are_the_metrics_of_the_repeated_rows(ties):
    y, p = _scores(400, 1, 0.4, ties)
    counts = np.random.default_rng(2).multinomial(400, np.full(400, 1 / 400), size=4)
    counts[0] = 1                                               # the rows themselves
    got = _weighted(y, p, counts)
    for i, c in enumerate(counts):
        rows = np.repeat(np.arange(y.size), c)
        want = binary_metrics(y[rows], p[rows])
        for metric in BOOTSTRAP_METRICS:
            assert got[metric][i] == pytest.approx(want[metric], abs=1e-12), (metric, i)


def test_resamples_keep_each_class_count():
    y, _ = _scores(300, 4, 0.4)
    w = bootstrap._counts(y.astype(float), 50, np.random.default_rng(0))
    assert np.all(w[:, y == 1].sum(1) == y.sum()) and np.all(w[:, y == 0].sum(1) == (y == 0).sum())


def test_a_model_against_itself_differs_by_nothing_and_the_seed_fixes_the_interval():
    y, p = _scores(300, 5, 0.4)
    same, drawn = paired_bootstrap(y, p, p, resamples=200, seed=1)
    assert drawn == 200 and all(v == (0.0, 0.0) for v in same.values())
    _, q = _scores(300, 6, 0.4)
    assert paired_bootstrap(y, p, q, 200, seed=9) == paired_bootstrap(y, p, q, 200, seed=9)
    assert paired_bootstrap(y, p, q, 200, seed=9) != paired_bootstrap(y, p, q, 200, seed=10)


def test_a_clearly_better_model_has_an_interval_on_the_better_side_containing_the_difference():
    rng = np.random.default_rng(7)
    y, strong = _scores(600, 7, 0.6)
    weak = np.clip(strong + rng.normal(0, 0.25, y.size), 0, 1)   # the same scores, blurred
    intervals, _ = paired_bootstrap(y, strong, weak, resamples=500, seed=3)
    point = {m: binary_metrics(y, strong)[m] - binary_metrics(y, weak)[m] for m in BOOTSTRAP_METRICS}
    lo, hi = intervals["roc_auc"]
    assert 0 < lo <= point["roc_auc"] <= hi
    lo, hi = intervals["brier"]
    assert lo <= point["brier"] <= hi < 0                         # lower Brier: better


def test_pairing_narrows_the_interval_against_unpaired_resamples():
    """Two close models on the same rows: the paired interval is far narrower than each model's own spread."""
    rng = np.random.default_rng(8)
    y, p = _scores(500, 8, 0.4)
    q = np.clip(p + rng.normal(0, 0.02, y.size), 0, 1)
    paired, _ = paired_bootstrap(y, p, q, resamples=400, seed=2)
    alone = _weighted(y, p, bootstrap._counts(y.astype(float), 400, np.random.default_rng(2)))["roc_auc"]
    own_width = np.quantile(alone, 0.975) - np.quantile(alone, 0.025)
    assert paired["roc_auc"][1] - paired["roc_auc"][0] < own_width / 3


def test_work_is_bounded_on_large_sets():
    assert resamples_for(1_000, 1000) == 1000
    assert resamples_for(200_000, 1000) == bootstrap.MAX_CELLS // 200_000 < 1000
    assert resamples_for(10_000_000, 1000) == bootstrap.MIN_RESAMPLES


def test_refuses_what_it_cannot_compute():
    y, p = _scores(50, 9, 0.4)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap(y, p, p[:-1])
    with pytest.raises(ValueError, match="both classes"):
        paired_bootstrap(np.zeros(50), p, p)
