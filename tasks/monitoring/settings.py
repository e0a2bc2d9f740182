"""``configs/monitoring.yaml``: the handover guide's checklist thresholds, its alarm settings and how often
the health watcher asks every target's ``/health``.

Validated once at the entry point (``load_monitoring``), like ``tasks.settings``'s pipeline config, and passed
down; nothing below reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from tasks.constants import CONFIGS
from tasks.settings import _Section, _validated, read_config

DEFAULT_MONITORING = CONFIGS / "monitoring.yaml"


class LevelThresholds(_Section):
    warning: float = Field(gt=0, description="the level that raises a warning")
    critical: float = Field(gt=0, description="the level that raises a critical alarm (a page); at least warning")

    @model_validator(mode="after")
    def _ordered(self) -> LevelThresholds:
        if self.critical < self.warning:
            raise ValueError(f"critical ({self.critical}) is below warning ({self.warning})")
        return self


class EceThresholds(LevelThresholds):
    """Calibration error on the labelled rows; the trend is a least-squares line through the hourly ECE values of
    the last day (hours with at least trend_min_labels labels, at least trend_min_points of them)."""

    critical_hours: int = Field(2, ge=1, description="consecutive hours at or above critical before it is critical")
    trend_rise: float = Field(0.02, gt=0, description="a rise of the day's ECE trend line this large: a warning")
    trend_min_points: int = Field(4, ge=2, description="fewest hours the trend line is drawn through")
    trend_min_labels: int = Field(50, ge=1, description="fewest labels an hour needs to count in the trend")


class PsiThresholds(LevelThresholds):
    """PSI of each input feature against the training data's reference bins."""

    many_features: int = Field(3, ge=1, description="more features than this above warning: critical")


class PredictionThresholds(_Section):
    """The prediction distribution against the training baseline (warnings)."""

    mean_shift: float = Field(0.10, gt=0, description="|mean prediction - training mean| above this")
    variance_increase: float = Field(0.50, gt=0, description="prediction variance up by more than this share")
    extreme_share: float = Field(0.20, gt=0, le=1, description="share of predictions below 0.05 or above 0.95")


class LatencyThresholds(_Section):
    """Request latency in milliseconds, per minute."""

    p95_warning: float = Field(100, gt=0, description="p95 above this: a warning")
    p95_critical: float = Field(200, gt=0, description="p95 above this for p95_minutes: critical")
    p95_minutes: int = Field(5, ge=1, description="minutes p95 must stay above p95_critical")
    p99_critical: float = Field(500, gt=0, description="p99 above this for p99_minutes: critical")
    p99_minutes: int = Field(2, ge=1, description="minutes p99 must stay above p99_critical")


class ErrorThresholds(LevelThresholds):
    """Share of requests answered with an error (warning/critical), and of server errors (5xx)."""

    minutes: int = Field(5, ge=1, description="minutes the error rate must stay above critical")
    server_errors: float = Field(0.001, gt=0, description="5xx rate above this for server_minutes: critical")
    server_minutes: int = Field(10, ge=1, description="minutes the 5xx rate must stay above server_errors")


class PerformanceThresholds(_Section):
    """The labelled rows' metrics against training's (warnings: retrain)."""

    roc_auc_drop: float = Field(0.05, gt=0, description="ROC-AUC this far below training's")
    precision_drop: float = Field(0.10, gt=0, description="precision this far below training's")


class VolumeThresholds(_Section):
    """Requests per minute against the previous windows' rate (warnings)."""

    drop: float = Field(0.50, gt=0, lt=1, description="a fall by more than this share")
    spike: float = Field(2.00, gt=0, description="a rise by more than this share")
    min_requests: int = Field(100, ge=1, description="fewest requests before, for the rate to be compared")


class MonitoringSettings(_Section):
    """``configs/monitoring.yaml``: the guide's checklist thresholds."""

    lookback_minutes: int = Field(60, ge=1, le=24 * 60, description=(
        "the traffic each monitor run judges (the hourly deployment)"))
    min_rows_for_drift: int = Field(200, ge=1, description=(
        "below this many scored rows PSI and the prediction checks say \"not enough data\""))
    min_labels: int = Field(200, ge=1, description=(
        "below this many labelled rows ECE, ROC-AUC, precision and recall are not judged"))
    ece: EceThresholds = Field(EceThresholds(warning=0.05, critical=0.10), description="calibration error (ECE)")
    psi: PsiThresholds = Field(PsiThresholds(warning=0.15, critical=0.25), description="input drift (PSI)")
    prediction: PredictionThresholds = Field(PredictionThresholds(), description="prediction drift")
    latency_ms: LatencyThresholds = Field(LatencyThresholds(), description="request latency (ms)")
    error_rate: ErrorThresholds = Field(ErrorThresholds(warning=0.005, critical=0.01), description="error rates")
    performance: PerformanceThresholds = Field(PerformanceThresholds(), description="metrics on the labelled rows")
    volume: VolumeThresholds = Field(VolumeThresholds(), description="request volume")
    host_attempts: int = Field(3, ge=1, le=10, description="health checks of a host before it is called down")
    host_retry_wait_s: float = Field(2.0, ge=0, le=60, description="seconds between a host's health checks")
    health_interval_s: float = Field(30, ge=1, le=3600, description=(
        "seconds between two rounds of the health watcher (python -m flows watch) over every target's /health"))
    pagerduty_url: str = Field("https://events.pagerduty.com/v2/enqueue", description=(
        "PagerDuty's events endpoint for critical alarms (the routing key: $PIPELINE_PAGERDUTY_ROUTING_KEY)"))


def load_monitoring(path: str | Path | None = None, env: dict[str, str] | None = None) -> MonitoringSettings:
    """Read ``path`` (else ``$PIPELINE_MONITORING``, else configs/monitoring.yaml) and validate it.

    Raises:
        ConfigError: unreadable, or a key has an impossible value (the key is named).
    """
    env = dict(os.environ) if env is None else env
    path = Path(path or env.get("PIPELINE_MONITORING") or DEFAULT_MONITORING)
    return _validated(MonitoringSettings, read_config(path, "monitoring config"), path)

