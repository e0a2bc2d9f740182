"""From what a server recorded (``GET /monitoring/window``) to the guide's checklist numbers.

Everything is computed from counts: feature and prediction histograms on the export's frozen
reference bins, per-label probability histograms, latency buckets, status counts. So the cost
does not grow with traffic, and no raw feature value leaves the host.

    drift        PSI per feature and for the predictions against the export's reference, with a
                 minimum sample below which it says "not enough data"; a bin empty on one side is
                 floored at epsilon, and counted
    prediction   mean, variance and share of extremes against the training baseline
    labels       ECE (equal-width and equal-mass), ROC-AUC, precision and recall, per hour and
                 over the span, with the number of labelled rows
    traffic      requests per minute, 4xx / 5xx rates, rejected inputs by feature, latency
                 p50 / p95 / p99, and the same per minute for the rules that span time
"""

from __future__ import annotations

import numpy as np

from serving.metrics import PSI_EPSILON, psi

THRESHOLD = 0.5   # precision and recall of "p >= 0.5"


# ---------------------------------------------------------------- drift

def _expected(feature: dict, reference: dict) -> np.ndarray | None:
    """The reference distribution in the layout the server counts in (see serving.monitoring)."""
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
    # fine bin stay together, as in serving.metrics).
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


# ---------------------------------------------------------------- traffic

def traffic(window: dict, minutes: float) -> dict:
    requests = window.get("requests", 0)
    e4, e5 = window.get("errors_4xx", 0), window.get("errors_5xx", 0)
    return {"requests": requests, "rows": window.get("rows", 0),
            "requests_per_minute": round(requests / minutes, 3) if minutes else None,
            "error_rate": round((e4 + e5) / requests, 6) if requests else 0.0,
            "rate_4xx": round(e4 / requests, 6) if requests else 0.0,
            "rate_5xx": round(e5 / requests, 6) if requests else 0.0,
            "rejected_by_feature": window.get("rejected_by_feature", {}),
            "latency_ms": {q: window.get(f"{q}_ms") for q in ("p50", "p95", "p99")}}


def assess(window: dict, metadata, lookback_minutes: float, min_rows: int) -> dict[str, dict]:
    """Per served version: drift, prediction, labels and traffic, from one /monitoring/window answer.

    ``metadata`` maps a served (export) version to its ``ModelMetadata`` (None when unknown)."""
    out = {}
    for version, w in (window.get("versions") or {}).items():
        meta = metadata.get(version)
        reference = (meta.reference or {}) if meta is not None else {}
        out[version] = {"traffic": traffic(w, lookback_minutes),
                        "features": feature_drift(w, reference, min_rows),
                        "prediction": prediction_drift(w, reference, min_rows),
                        "labels": label_metrics(w.get("labels") or []),
                        "labels_per_hour": [{"start": h["start"], **label_metrics([h])} for h in w.get("labels") or []],
                        "series": w.get("series") or [],
                        "training": dict(meta.cv_metrics) if meta is not None else {}}
    return out
