"""From what a server recorded (``GET /monitoring/window``) to the guide's checklist numbers.

Everything is computed from counts (feature and prediction histograms on the export's frozen
reference bins, per-label probability histograms, latency buckets, status counts), so the cost
does not grow with traffic and no raw feature value leaves the host. Drift and label maths are
``serving.contract.drift`` (the server's dashboard computes the same); this module adds the traffic numbers
and puts one assessment together per served version:

    drift, prediction, labels (per hour and over the span), traffic (requests per minute, 4xx /
    5xx rates, rejected inputs by feature, latency p50 / p95 / p99), the per-minute series
"""

from __future__ import annotations

from serving.contract.drift import feature_drift, label_metrics, prediction_drift

# ---------------------------------------------------------------- traffic

def error_rates(window: dict) -> dict[str, float | None]:
    """Shares of requests answered 4xx or 5xx, 4xx, and 5xx (None without requests), of a window or
    of one point of its series."""
    requests = window.get("requests", 0)
    if not requests:
        return {"error_rate": None, "rate_4xx": None, "rate_5xx": None}
    e4, e5 = window.get("errors_4xx", 0), window.get("errors_5xx", 0)
    return {"error_rate": (e4 + e5) / requests, "rate_4xx": e4 / requests, "rate_5xx": e5 / requests}


def traffic(window: dict, minutes: float) -> dict:
    requests = window.get("requests", 0)
    rates = {k: round(v, 6) if v is not None else 0.0 for k, v in error_rates(window).items()}
    return {"requests": requests, "rows": window.get("rows", 0),
            "requests_per_minute": round(requests / minutes, 3) if minutes else None,
            **rates,
            "rejected_by_feature": window.get("rejected_by_feature", {}),
            "outside_soft_bounds": window.get("outside_soft_bounds", {}),
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
