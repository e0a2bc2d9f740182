"""Labels for generated tables: drawn from a logistic model whose intercept is set for a wanted positive rate."""

from __future__ import annotations

import numpy as np


def labels_at_rate(signal: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities sigmoid(b + signal), ``b`` found by bisection so their mean is ``rate``, and labels drawn
    from them with ``rng`` (one uniform per row): ``(labels as bool, probabilities)``."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        b = (lo + hi) / 2
        lo, hi = (b, hi) if (1 / (1 + np.exp(-(b + signal)))).mean() < rate else (lo, b)
    p = 1 / (1 + np.exp(-(b + signal)))
    return rng.random(signal.size) < p, p
