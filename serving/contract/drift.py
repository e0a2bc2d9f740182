"""Drift and calibration from counts: what the monitor and the server's dashboard both compute.

The inputs are what ``serving.monitoring.recorder`` records (counts on the export's reference bins, label
histograms), so the cost does not grow with traffic and no raw feature value is needed.

    feature_drift     PSI per feature against the export's reference; "not enough data" below a
                      minimum sample; a bin empty on one side is floored at epsilon, and counted
    prediction_drift  mean, variance, share of extremes and PSI against the training baseline
    label_metrics     ECE (equal-width and equal-mass), ROC-AUC, precision and recall from
                      per-label probability histograms
"""

from __future__ import annotations

import numpy as np

from serving.contract.binning import PSI_EPSILON, psi

THRESHOLD = 0.5   # precision and recall of "p >= 0.5"


# ---------------------------------------------------------------- drift

def _expected(feature: dict, reference: dict) -> np.ndarray | None:
    """The reference distribution in the layout the server counts in (see serving.monitoring.recorder)."""
    if feature["kind"] == "numeric":
        ref = (reference.get("numeric") or {}).get(feature["name"])
        if ref is None or list(ref["edges"]) != list(feature["edges"]):
            return None
        nf = ref.get("null_fraction", 0.0)
        return np.r_[np.asarray(ref["fractions"]) * (1 - nf), nf]
    ref = (reference.get("categorical") or {}).get(feature["name"])
    if ref is None or list(ref["categories"]) != list(feature["categories"]):
        return None
    nf = ref.get("null_fraction", 0.0)
    freq = [ref["frequencies"].get(c, 0.0) * (1 - nf) for c in ref["categories"]]
    return np.r_[freq, 0.0, nf]      # categories, unseen (never seen in training), null


def _psi_entry(expected: np.ndarray, counts: np.ndarray, min_rows: int) -> dict:
    n = int(counts.sum())
    if n < min_rows:
        return {"psi": None, "rows": n, "status": f"not enough data ({n} < {min_rows} rows)"}
    actual = counts / n
    # Bins empty on one side only: there epsilon smoothing sets the value (empty on both sides adds 0).
    smoothed = int(((expected < PSI_EPSILON) != (actual < PSI_EPSILON)).sum())
    return {"psi": round(psi(expected, actual), 6), "rows": n, "smoothed_bins": smoothed, "status": "ok"}


def feature_drift(window: dict, reference: dict, min_rows: int) -> dict[str, dict]:
    out = {}
    for name, feature in (window.get("features") or {}).items():
        expected = _expected({**feature, "name": name}, reference)
        if expected is None:
            out[name] = {"psi": None, "rows": int(sum(feature["counts"])),
                         "status": "the server counts on other bins than this version's reference"}
            continue
        out[name] = _psi_entry(expected, np.asarray(feature["counts"], dtype=np.float64), min_rows)
    return out


def prediction_drift(window: dict, reference: dict, min_rows: int) -> dict:
    pred, ref = window.get("prediction") or {}, reference.get("prediction") or {}
    n = int(pred.get("n", 0))
    if n < min_rows:
        return {"rows": n, "status": f"not enough data ({n} < {min_rows} rows)"}
    mean = pred["sum"] / n
    variance = max(pred["sum_squares"] / n - mean**2, 0.0)
    out = {"rows": n, "status": "ok", "mean": round(mean, 6), "variance": round(variance, 6),
           "extreme_share": round(pred["extremes"] / n, 6)}
    if ref:
        out["baseline"] = {"mean": ref.get("mean"), "variance": (ref.get("std") or 0.0) ** 2,
                           "extreme_share": ref.get("extreme_fraction")}
        out["mean_shift"] = round(abs(mean - ref["mean"]), 6) if ref.get("mean") is not None else None
        base_var = (ref.get("std") or 0.0) ** 2
        out["variance_change"] = round(variance / base_var - 1, 6) if base_var > 0 else None
        if list(ref.get("edges", [])) == list(pred.get("edges", [])):
            counts = np.asarray(pred["counts"], dtype=np.float64)
            out["psi"] = _psi_entry(np.asarray(ref["fractions"]), counts, min_rows)["psi"]
    return out


# ---------------------------------------------------------------- labels

def _label_arrays(hours: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.sum([h["positive"] for h in hours], axis=0).astype(np.float64)
    neg = np.sum([h["negative"] for h in hours], axis=0).astype(np.float64)
    psum = np.sum([h["probability_sum"] for h in hours], axis=0).astype(np.float64)
    return pos, neg, psum


def _ece_from_bins(pos, neg, psum, groups: list[np.ndarray]) -> float:
    total = pos.sum() + neg.sum()
    err = 0.0
    for g in groups:
        n = pos[g].sum() + neg[g].sum()
        if n:
            err += abs(pos[g].sum() - psum[g].sum())      # n * |observed rate - mean prediction|
    return float(err / total) if total else 0.0


def label_metrics(hours: list[dict], n_bins: int = 10) -> dict:
    """ECE, ROC-AUC, precision and recall of the labelled rows in ``hours`` (label histograms)."""
    if not hours:
        return {"n": 0}
    pos, neg, psum = _label_arrays(hours)
    fine = pos.size
    n_pos, n_neg = pos.sum(), neg.sum()
    width = [np.arange(fine)[(np.arange(fine) * n_bins) // fine == b] for b in range(n_bins)]
    # Equal mass: cut the fine bins where the running count crosses k/n_bins of the rows (ties in a
    # fine bin stay together, as in the pipeline's tasks.metrics.equal_mass_edges).
    cum = np.cumsum(pos + neg)
    cuts = np.unique(np.searchsorted(cum, np.arange(1, n_bins) * cum[-1] / n_bins, side="left") + 1)
    mass = [g for g in np.split(np.arange(fine), cuts[(cuts > 0) & (cuts < fine)]) if g.size]
    out = {"n": int(n_pos + n_neg), "positives": int(n_pos),
           "ece": round(_ece_from_bins(pos, neg, psum, width), 6),
           "ece_equal_mass": round(_ece_from_bins(pos, neg, psum, mass), 6)}
    if n_pos and n_neg:
        below = np.cumsum(neg) - neg          # negatives in lower bins
        out["roc_auc"] = round(float(((pos * below).sum() + 0.5 * (pos * neg).sum()) / (n_pos * n_neg)), 6)
    high = np.arange(fine) >= int(THRESHOLD * fine)
    tp, fp = pos[high].sum(), neg[high].sum()
    out["precision"] = round(float(tp / (tp + fp)), 6) if tp + fp else None
    out["recall"] = round(float(tp / n_pos), 6) if n_pos else None
    return out
