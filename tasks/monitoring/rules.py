"""The guide's alarm table as rules over an assessment (``assess.assess``), thresholds from
``configs/monitoring.yaml``.

Each rule gives at most one ``Alarm`` per (version, rule) with its level, the measured value, the
threshold, and the guide's action. Conditions that span time ("p95 above 200 ms for 5 minutes")
are read off the server's per-minute series. ``rollback`` is True only where another model version
can fix what was found; drift and calibration name the guide's action instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tasks.monitoring.assess import error_rates
from tasks.monitoring.settings import MonitoringSettings

WARNING, CRITICAL = "warning", "critical"


@dataclass(frozen=True)
class Alarm:
    rule: str                 # "psi:age", "ece", "latency_p95", …
    level: str                # warning | critical
    value: float | None
    threshold: float
    message: str
    action: str
    rollback: bool = False    # another model version (a rollback) would fix it

    def to_dict(self) -> dict:
        return asdict(self)


def sustained(series: list[dict], key: str, threshold: float, minutes: int, now: float, window_s: int) -> bool:
    """Every window of the last ``minutes`` had traffic and ``key`` above ``threshold``."""
    span = max(1, round(minutes * 60 / window_s))
    recent = [w for w in series if w["start"] >= now - span * window_s - window_s and w["start"] < now]
    recent = recent[-span:]
    return len(recent) == span and all(w.get(key) is not None and w[key] > threshold for w in recent)


def drift_alarms(a: dict, cfg: MonitoringSettings) -> list[Alarm]:
    out = []
    action = "Investigate data drift (inputs shifted from the training data)"
    measured = {n: f["psi"] for n, f in a["features"].items() if f.get("psi") is not None}
    for name, value in sorted(measured.items()):
        if value > cfg.psi.critical:
            out.append(Alarm(f"psi:{name}", CRITICAL, value, cfg.psi.critical,
                             f"PSI of {name} is {value:.3f} (> {cfg.psi.critical})", action))
        elif value >= cfg.psi.warning:
            out.append(Alarm(f"psi:{name}", WARNING, value, cfg.psi.warning,
                             f"PSI of {name} is {value:.3f} (≥ {cfg.psi.warning})", action))
    shifted = sorted(n for n, v in measured.items() if v > cfg.psi.warning)
    if len(shifted) > cfg.psi.many_features:
        out.append(Alarm("psi:many", CRITICAL, float(len(shifted)), float(cfg.psi.many_features),
                         f"{len(shifted)} features have PSI > {cfg.psi.warning}: {', '.join(shifted)}", action))
    return out


def prediction_alarms(a: dict, cfg: MonitoringSettings) -> list[Alarm]:
    p, t = a["prediction"], cfg.prediction
    if p.get("status") != "ok":
        return []
    action = "Investigate the inputs and the model (the prediction distribution moved)"
    out = []
    if p.get("mean_shift") is not None and p["mean_shift"] > t.mean_shift:
        out.append(Alarm("prediction_mean", WARNING, p["mean_shift"], t.mean_shift,
                         f"mean prediction {p['mean']:.3f} is {p['mean_shift']:.3f} from the training baseline "
                         f"{p['baseline']['mean']:.3f}", action))
    if p.get("variance_change") is not None and p["variance_change"] > t.variance_increase:
        out.append(Alarm("prediction_variance", WARNING, p["variance_change"], t.variance_increase,
                         f"prediction variance up {p['variance_change']:.0%} on the training baseline", action))
    if p["extreme_share"] > t.extreme_share:
        out.append(Alarm("prediction_extremes", WARNING, p["extreme_share"], t.extreme_share,
                         f"{p['extreme_share']:.1%} of predictions are below 0.05 or above 0.95", action))
    return out


def ece_trend(hours: list[dict], cfg: MonitoringSettings) -> Alarm | None:
    """A warning when the hourly ECE of the last day rises (a least-squares line through it)."""
    points = [(h["start"] / 3600, h["ece"]) for h in hours if h.get("n", 0) >= cfg.ece.trend_min_labels]
    if len(points) < cfg.ece.trend_min_points:
        return None
    x, y = np.array(points).T
    slope = float(np.polyfit(x, y, 1)[0])
    rise = slope * float(x.max() - x.min())
    if rise < cfg.ece.trend_rise:
        return None
    return Alarm("ece_trend", WARNING, round(rise, 6), cfg.ece.trend_rise,
                 f"ECE rising over the last day: +{rise:.3f} across {len(points)} hours "
                 f"({y[0]:.3f} -> {y[-1]:.3f})", "Recalibrate or retrain")


def label_alarms(a: dict, cfg: MonitoringSettings) -> list[Alarm]:
    labels, training = a["labels"], a["training"]
    trend = ece_trend(a.get("labels_per_hour_24h") or [], cfg)
    out = [trend] if trend is not None else []
    if labels.get("n", 0) < cfg.min_labels:
        return out
    action = "Recalibrate or retrain"
    hours = [h for h in a["labels_per_hour"] if h.get("n")]
    last = hours[-cfg.ece.critical_hours:]
    if len(last) == cfg.ece.critical_hours and all(h["ece"] >= cfg.ece.critical for h in last):
        hourly = ", ".join(f"{h['ece']:.3f}" for h in last)
        out.append(Alarm("ece", CRITICAL, last[-1]["ece"], cfg.ece.critical,
                         f"ECE ≥ {cfg.ece.critical} for {cfg.ece.critical_hours} consecutive hours ({hourly}; "
                         f"{labels['n']} labelled rows)", action))
    elif labels["ece"] >= cfg.ece.warning:
        out.append(Alarm("ece", WARNING, labels["ece"], cfg.ece.warning,
                         f"ECE {labels['ece']:.3f} over {labels['n']} labelled rows (≥ {cfg.ece.warning})", action))
    for metric, allowed in (("roc_auc", cfg.performance.roc_auc_drop), ("precision", cfg.performance.precision_drop)):
        if labels.get(metric) is None or training.get(metric) is None:
            continue
        drop = training[metric] - labels[metric]
        if drop > allowed:
            out.append(Alarm(metric, WARNING, round(drop, 6), allowed,
                             f"{metric} {labels[metric]:.3f} on {labels['n']} labelled rows is {drop:.3f} below "
                             f"training's {training[metric]:.3f}", "Retrain on recent data"))
    return out


def traffic_alarms(a: dict, cfg: MonitoringSettings, now: float, window_s: int,
                   previous_rpm: float | None = None) -> list[Alarm]:
    t = a["traffic"]
    series = [{**w, **error_rates(w)} for w in a["series"]]     # per-minute rates, for the sustained rules
    lat, err, vol = cfg.latency_ms, cfg.error_rate, cfg.volume
    out = []
    p95 = t["latency_ms"]["p95"]
    if sustained(series, "p95_ms", lat.p95_critical, lat.p95_minutes, now, window_s):
        out.append(Alarm("latency_p95", CRITICAL, p95, lat.p95_critical,
                         f"p95 latency above {lat.p95_critical:g} ms for {lat.p95_minutes} minutes",
                         "Scale or optimize"))
    elif p95 is not None and p95 > lat.p95_warning:
        out.append(Alarm("latency_p95", WARNING, p95, lat.p95_warning,
                         f"p95 latency {p95:g} ms (> {lat.p95_warning:g} ms)", "Scale or optimize"))
    if sustained(series, "p99_ms", lat.p99_critical, lat.p99_minutes, now, window_s):
        out.append(Alarm("latency_p99", CRITICAL, t["latency_ms"]["p99"], lat.p99_critical,
                         f"p99 latency above {lat.p99_critical:g} ms for {lat.p99_minutes} minutes",
                         "Scale or optimize"))
    if sustained(series, "error_rate", err.critical, err.minutes, now, window_s):
        out.append(Alarm("error_rate", CRITICAL, t["error_rate"], err.critical,
                         f"error rate above {err.critical:.1%} for {err.minutes} minutes", "Investigate failures"))
    elif t["requests"] and t["error_rate"] > err.warning:
        out.append(Alarm("error_rate", WARNING, t["error_rate"], err.warning,
                         f"error rate {t['error_rate']:.2%} over {t['requests']} requests (> {err.warning:.1%})",
                         "Investigate failures"))
    if sustained(series, "rate_5xx", err.server_errors, err.server_minutes, now, window_s):
        out.append(Alarm("server_errors", CRITICAL, t["rate_5xx"], err.server_errors,
                         f"5xx above {err.server_errors:.1%} for {err.server_minutes} minutes",
                         "Investigate failures (server errors)"))
    rpm = t["requests_per_minute"]
    if previous_rpm and rpm is not None and previous_rpm * 60 >= vol.min_requests:
        if rpm < previous_rpm * (1 - vol.drop):
            out.append(Alarm("volume_drop", WARNING, round(rpm / previous_rpm - 1, 4), -vol.drop,
                             f"{rpm:.1f} requests/min against {previous_rpm:.1f} before (a drop of more than "
                             f"{vol.drop:.0%}: an outage upstream?)", "Check the clients and the load balancer"))
        elif rpm > previous_rpm * (1 + vol.spike):
            out.append(Alarm("volume_spike", WARNING, round(rpm / previous_rpm - 1, 4), vol.spike,
                             f"{rpm:.1f} requests/min against {previous_rpm:.1f} before (a spike of more than "
                             f"{vol.spike:.0%}: an attack or a client bug?)", "Check the clients"))
    return out


def evaluate(a: dict, cfg: MonitoringSettings, now: float, window_s: int,
             previous_rpm: float | None = None) -> list[Alarm]:
    """Every alarm the guide's table raises for one served version's assessment."""
    return [*drift_alarms(a, cfg), *prediction_alarms(a, cfg), *label_alarms(a, cfg),
            *traffic_alarms(a, cfg, now, window_s, previous_rpm)]
