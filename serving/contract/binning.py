"""Drift maths shared by the pipeline and the model server (numpy only).

The reference bins training writes into a model's metadata (``quantile_edges``, ``bin_fractions``:
a value equal to an edge falls in the bin above, as the server's counters bin it) and PSI, which
compares two binned distributions on those frozen edges. ECE and the reliability bins are the
pipeline's (``tasks.metrics``); the server's hourly ECE comes from its label counts (``drift``).
"""

from __future__ import annotations

import numpy as np

PSI_EPSILON = 1e-4


def quantile_edges(values, n_bins: int = 10) -> list[float]:
    """Inner bin edges at the quantiles of the finite values (duplicates dropped).

    The outer bins are open: bin 0 is (-inf, edges[0]), the last is [edges[-1], inf).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(x) for x in np.unique(qs)]


def bin_fractions(values, edges: list[float]) -> list[float]:
    """Fraction of the finite values in each of the ``len(edges) + 1`` bins."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    counts = np.bincount(np.searchsorted(np.asarray(edges), v, side="right"), minlength=len(edges) + 1)
    return [float(c) for c in counts / max(v.size, 1)]


def psi(expected, actual, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two binned distributions (fractions summing to 1).

    Empty bins are floored at ``epsilon`` so one empty bin gives a large but finite value.
    """
    e = np.clip(np.asarray(expected, dtype=np.float64), epsilon, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), epsilon, None)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs the same bins on both sides ({e.size} vs {a.size})")
    return float(np.sum((a - e) * np.log(a / e)))
