"""The guide's alarm table, rule by rule, with the thresholds of configs/monitoring.yaml."""

from __future__ import annotations

import pytest

from tasks.monitoring.rules import CRITICAL, WARNING, evaluate, sustained
from tasks.monitoring.settings import load_monitoring

pytestmark = pytest.mark.unit

NOW = 1_000_000 * 60.0


@pytest.fixture(scope="module")
def cfg():
    return load_monitoring()      # the shipped configs/monitoring.yaml: the guide's numbers


def _assessment(features=None, prediction=None, labels=None, per_hour=(), series=(), traffic=None, training=None):
    return {"features": {n: {"psi": v, "rows": 1000, "status": "ok"} for n, v in (features or {}).items()},
            "prediction": prediction or {"status": "not enough data"},
            "labels": labels or {"n": 0}, "labels_per_hour": list(per_hour), "series": list(series),
            "traffic": traffic or {"requests": 0, "requests_per_minute": 0, "error_rate": 0.0, "rate_5xx": 0.0,
                                   "latency_ms": {"p50": None, "p95": None, "p99": None}},
            "training": training or {"roc_auc": 0.80}}


def _levels(alarms):
    return {a.rule: a.level for a in alarms}


def test_psi_levels_and_many_features(cfg):
    alarms = evaluate(_assessment({"a": 0.05, "b": 0.16, "c": 0.26}), cfg, NOW, 60)
    assert _levels(alarms) == {"psi:b": WARNING, "psi:c": CRITICAL}
    many = evaluate(_assessment({f"f{i}": 0.2 for i in range(4)}), cfg, NOW, 60)
    assert _levels(many)["psi:many"] == CRITICAL and all(not a.rollback for a in many)
    assert "Investigate data drift" in many[0].action


def test_ece_warns_then_is_critical_after_consecutive_hours(cfg):
    def hours(*eces):
        return [{"start": i * 3600, "n": 150, "ece": e} for i, e in enumerate(eces)]

    labels = {"n": 300, "ece": 0.12, "roc_auc": 0.8}
    one_bad_hour = evaluate(_assessment(labels=labels, per_hour=hours(0.03, 0.12)), cfg, NOW, 60)
    assert _levels(one_bad_hour) == {"ece": WARNING}
    two = evaluate(_assessment(labels=labels, per_hour=hours(0.11, 0.12)), cfg, NOW, 60)
    assert _levels(two) == {"ece": CRITICAL} and two[0].action == "Recalibrate or retrain" and not two[0].rollback
    too_few = evaluate(_assessment(labels={"n": 50, "ece": 0.5}, per_hour=hours(0.5, 0.5)), cfg, NOW, 60)
    assert too_few == []


def test_roc_auc_drop_from_training(cfg):
    alarms = evaluate(_assessment(labels={"n": 500, "ece": 0.01, "roc_auc": 0.70}, training={"roc_auc": 0.80}), cfg,
                      NOW, 60)
    assert _levels(alarms) == {"roc_auc": WARNING}


def test_prediction_distribution(cfg):
    pred = {"status": "ok", "mean": 0.45, "mean_shift": 0.15, "variance_change": 0.6, "extreme_share": 0.25,
            "baseline": {"mean": 0.30}}
    assert _levels(evaluate(_assessment(prediction=pred), cfg, NOW, 60)) == {
        "prediction_mean": WARNING, "prediction_variance": WARNING, "prediction_extremes": WARNING}


def _minutes(n, **values):
    return [{"start": NOW - (n - i) * 60, "requests": 100, "errors_4xx": 0, "errors_5xx": 0, **values}
            for i in range(n)]


def test_latency_is_critical_only_when_sustained(cfg):
    traffic = {"requests": 500, "requests_per_minute": 100, "error_rate": 0.0, "rate_5xx": 0.0,
               "latency_ms": {"p50": 50, "p95": 250, "p99": 300}}
    short = evaluate(_assessment(series=_minutes(3, p95_ms=250, p99_ms=300), traffic=traffic), cfg, NOW, 60)
    assert _levels(short) == {"latency_p95": WARNING}
    long = evaluate(_assessment(series=_minutes(5, p95_ms=250, p99_ms=600), traffic=traffic), cfg, NOW, 60)
    assert _levels(long) == {"latency_p95": CRITICAL, "latency_p99": CRITICAL}


def test_sustained_needs_traffic_in_every_window():
    series = _minutes(5, p95_ms=300)
    del series[2]
    assert not sustained(series, "p95_ms", 200, 5, NOW, 60)
    assert sustained(_minutes(5, p95_ms=300), "p95_ms", 200, 5, NOW, 60)


def test_error_rates(cfg):
    quiet = {"requests": 1000, "requests_per_minute": 100, "error_rate": 0.008, "rate_5xx": 0.0,
             "latency_ms": {"p50": 1, "p95": 2, "p99": 3}}
    assert _levels(evaluate(_assessment(traffic=quiet, series=_minutes(5)), cfg, NOW, 60)) == {"error_rate": WARNING}
    failing = _minutes(10, errors_5xx=2)
    alarms = evaluate(_assessment(traffic={**quiet, "error_rate": 0.02, "rate_5xx": 0.02}, series=failing), cfg,
                      NOW, 60)
    assert _levels(alarms) == {"error_rate": CRITICAL, "server_errors": CRITICAL}


def test_volume_drop_and_spike_against_the_previous_rate(cfg):
    base = {"requests": 600, "error_rate": 0.0, "rate_5xx": 0.0, "latency_ms": {"p50": 1, "p95": 2, "p99": 3}}
    drop = evaluate(_assessment(traffic={**base, "requests_per_minute": 4.0}), cfg, NOW, 60, previous_rpm=10.0)
    spike = evaluate(_assessment(traffic={**base, "requests_per_minute": 31.0}), cfg, NOW, 60, previous_rpm=10.0)
    steady = evaluate(_assessment(traffic={**base, "requests_per_minute": 9.0}), cfg, NOW, 60, previous_rpm=10.0)
    assert _levels(drop) == {"volume_drop": WARNING} and _levels(spike) == {"volume_spike": WARNING}
    assert steady == []


def test_a_rising_ece_over_the_day_is_a_warning(cfg):
    rising = [{"start": h * 3600, "n": 100, "ece": 0.01 + 0.002 * h} for h in range(24)]
    flat = [{"start": h * 3600, "n": 100, "ece": 0.02 + (0.004 if h % 2 else 0)} for h in range(24)]
    sparse = [{"start": h * 3600, "n": 10, "ece": 0.01 + 0.01 * h} for h in range(24)]
    assert _levels(evaluate({**_assessment(), "labels_per_hour_24h": rising}, cfg, NOW, 60)) == {"ece_trend": WARNING}
    assert evaluate({**_assessment(), "labels_per_hour_24h": flat}, cfg, NOW, 60) == []
    assert evaluate({**_assessment(), "labels_per_hour_24h": sparse}, cfg, NOW, 60) == []     # too few labels


def test_precision_drop_against_training(cfg):
    alarms = evaluate(_assessment(labels={"n": 500, "ece": 0.01, "roc_auc": 0.8, "precision": 0.40},
                                  training={"roc_auc": 0.8, "precision": 0.55}), cfg, NOW, 60)
    assert _levels(alarms) == {"precision": WARNING}


def test_a_critical_latency_that_began_with_the_new_version_is_a_rollback_alarm():
    from tasks.monitoring.rules import Alarm
    from tasks.monitoring.watch import began_with

    slow = Alarm("latency_p95", CRITICAL, 250.0, 200.0, "p95 above 200 ms for 5 minutes", "Scale or optimize")
    fine_before = {"requests": 5000, "p95_ms": 40.0, "p99_ms": 90.0, "errors_4xx": 3, "errors_5xx": 0}
    assert "p95_ms was 40" in began_with(slow, fine_before, 100)
    assert began_with(slow, {**fine_before, "p95_ms": 260.0}, 100) is None      # slow before too: scale, not roll back
    assert began_with(slow, {**fine_before, "requests": 20}, 100) is None       # too little traffic to tell
    assert began_with(slow, None, 100) is None
    drift = Alarm("psi:age", CRITICAL, 0.3, 0.25, "age drifted", "Investigate data drift")
    assert began_with(drift, fine_before, 100) is None                          # drift is never a rollback
