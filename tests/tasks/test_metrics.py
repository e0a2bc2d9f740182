import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, precision_score, recall_score, roc_auc_score

from serving.contract.binning import ece
from tasks.metrics import binary_metrics

pytestmark = pytest.mark.unit


def _data(seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_release_metrics_are_scikit_learns_and_the_shared_ece(seed):
    y, p = _data(seed)
    m = binary_metrics(y, p)
    assert m == {"roc_auc": roc_auc_score(y, p), "pr_auc": average_precision_score(y, p),
                 "brier": brier_score_loss(y, p), "ece": ece(y, p, 10, "width"),
                 "ece_equal_mass": ece(y, p, 10, "mass"), "precision": precision_score(y, p >= 0.5),
                 "recall": recall_score(y, p >= 0.5)}


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics([1, 1, 1], [0.1, 0.2, 0.3])
