"""The one configuration model: ``configs/pipeline.yaml`` plus environment overrides.

Validated once at the entry point (``load_settings``) and passed down; nothing
below reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.contract.processes import available_cpus
from tasks.constants import CONFIGS
from tasks.contract_files import read_yaml
from tasks.errors import ConfigError

DEFAULT_CONFIG = CONFIGS / "pipeline.yaml"
DEFAULT_MONITORING = CONFIGS / "monitoring.yaml"


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"   # a registered model's name, and its directory

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParallelSettings(_Section):
    """Where the cross-validation folds are fitted (``flows.training``)."""

    # serial: one after another in the release's process; dask: as parallel Prefect tasks on a Dask cluster
    runner: Literal["serial", "dask"] = "serial"
    address: str | None = None                 # a Dask scheduler, tcp://host:8786; None: a local cluster here
    workers: int | None = Field(None, ge=1)    # the local cluster's processes; None: the CPUs, at most the folds


# What a search candidate may change: the network and how it is fitted, never the folds, the inner
# validation split the candidates are judged on, or where they run.
SEARCHABLE = frozenset({"epochs", "batch_size", "learning_rate", "hidden_units", "dropout", "l2",
                        "early_stopping_patience", "lr_schedule", "numeric_embedding", "embedding_frequencies",
                        "embedding_sigma", "embedding_dim", "embedding_with_value", "wide_buckets"})


# The shipped search: what configs/pipeline.yaml lists, so a drafted config that names no search gets it too.
DEFAULT_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"embedding_sigma": 1.0},                     # finer detail in the numeric embeddings
    {"hidden_units": [128, 64], "dropout": 0.2},  # wider
    {"hidden_units": [64, 64, 32]},               # deeper
    {"hidden_units": [32], "dropout": 0.0},       # smaller
    {"wide_buckets": 65536},                      # memorise repeated feature vectors (Wide & Deep)
)


class SearchSettings(_Section):
    """A small search over network sizes (``tasks/training/search.py``): each candidate is fitted on every
    fold and judged on the folds' inner validation rows, never on the out-of-fold rows the metrics use."""

    enabled: bool = True
    # Wall-clock seconds for the whole search, the configured network included (it always runs); a
    # candidate is started only while the time spent so far plus one more candidate fits. None: no limit.
    budget_s: float | None = Field(300, gt=0)
    # Each a mapping of training keys (SEARCHABLE) to values, tried in this order after the configured network;
    # the configured network is kept unless one beats it by more than a standard error.
    candidates: tuple[dict[str, Any], ...] = DEFAULT_CANDIDATES

    @model_validator(mode="after")
    def _known_keys(self) -> SearchSettings:
        for i, candidate in enumerate(self.candidates):
            unknown = sorted(set(candidate) - SEARCHABLE)
            if unknown:
                raise ValueError(f"candidates[{i}]: {', '.join(unknown)} cannot be searched "
                                 f"(allowed: {', '.join(sorted(SEARCHABLE))})")
            if not candidate:
                raise ValueError(f"candidates[{i}] changes nothing")
        return self


class TrainingSettings(_Section):
    cv_folds: int = Field(5, ge=2, le=20)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.1, ge=0, lt=1)
    l2: float = Field(1e-5, ge=0)
    early_stopping_patience: int = Field(6, ge=1)
    # constant | plateau (halve the rate when validation loss stalls) | cosine (decay over `epochs`)
    lr_schedule: Literal["constant", "plateau", "cosine"] = "cosine"
    # periodic: PLR embeddings of numeric features (Gorishniy et al. 2022); none: the standardised value
    numeric_embedding: Literal["none", "periodic"] = "periodic"
    embedding_frequencies: int = Field(16, ge=1, le=128)   # k: sin/cos pairs per numeric feature
    embedding_sigma: float = Field(0.1, gt=0)              # initial frequencies ~ N(0, sigma)
    embedding_dim: int = Field(4, ge=1, le=64)             # per-feature Linear+ReLU output
    embedding_with_value: bool = True                      # feed the standardised value beside its embedding
    # Wide & Deep's memorisation path (Cheng et al. 2016): a learned logit per hashed cross of all the raw
    # feature values, this many buckets per fold model; it pays where whole feature vectors repeat
    # (panel data). 0: off.
    wide_buckets: int = Field(0, ge=0, le=1 << 22)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    min_rows: int = Field(100, ge=10)
    min_class_rows: int = Field(10, ge=2)
    intra_op_threads: int | None = Field(None, ge=1)
    inter_op_threads: int | None = Field(None, ge=1)
    parallel: ParallelSettings = ParallelSettings()
    search: SearchSettings = SearchSettings()

    @model_validator(mode="after")
    def _valid_candidates(self) -> TrainingSettings:
        for i, _ in enumerate(self.search.candidates):
            try:
                self.candidate(i)
            except ValidationError as exc:
                parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
                raise ValueError(f"search.candidates[{i}]: " + "; ".join(parts)) from None
        return self

    def candidate(self, index: int) -> TrainingSettings:
        """These settings with search candidate ``index``'s changes, and no search of their own."""
        changes = self.search.candidates[index]
        no_search = {"enabled": False, "candidates": ()}
        return TrainingSettings.model_validate({**self.model_dump(exclude={"search"}), **changes, "search": no_search})


class CalibrationSettings(_Section):
    # auto: every candidate is measured cross-fitted and the simplest within one standard error of the
    # lowest Brier is shipped (tasks/training/calibrate.py); the others ship that calibrator.
    method: Literal["auto", "none", "sigmoid", "beta", "isotonic"] = "auto"
    n_bins: int = Field(10, ge=2, le=100)


class ExportSettings(_Section):
    golden_examples: int = Field(32, ge=1, le=500)
    reference_bins: int = Field(10, ge=2, le=100)
    fidelity_tolerance: float = Field(1e-5, gt=0)


class MlflowSettings(_Section):
    tracking_uri: str | None = None
    experiment: str = "tabular-release"


# Absolute metrics, and the same relative to what chance gives on the data's positive rate p
# (tasks.metrics.chance_relative): pr_auc_lift = PR-AUC / p, brier_skill = 1 - Brier / (p (1 - p)),
# ece_relative = ECE / min(p, 1 - p). The relative ones mean the same on a 5 % and a 50 % positive rate.
Metric = Literal["roc_auc", "pr_auc", "brier", "ece", "pr_auc_lift", "brier_skill", "ece_relative"]


class Bound(_Section):
    min: float | None = None
    max: float | None = None


class GateSettings(_Section):
    # Requirements on the candidate's cross-validated metrics. The defaults hold on any base rate: ROC-AUC
    # (chance 0.5), the ranking's precision at least 1.25 times the positive rate, a Brier score no worse
    # than always predicting the positive rate's, and ECE at most a quarter of the minority class's rate.
    bounds: dict[Metric, Bound] = Field(default_factory=lambda: {
        "roc_auc": Bound(min=0.7), "pr_auc_lift": Bound(min=1.25), "brier_skill": Bound(min=0.0),
        "ece_relative": Bound(max=0.25)})
    # How much worse than the champion a candidate may be (absolute change of each metric).
    max_regression: dict[Metric, float] = Field(default_factory=lambda: {
        "roc_auc": 0.01, "pr_auc_lift": 0.1, "brier_skill": 0.05, "ece_relative": 0.1})
    # The rows both models are scored on: --eval-data, else (the schema names a time_column) the most
    # recent holdout_fraction of the data, held out from training (tasks/release/evaluate.py).
    holdout_fraction: float = Field(0.2, ge=0.05, le=0.5)
    min_eval_rows: int = Field(100, ge=10)
    bootstrap_resamples: int = Field(1000, ge=100, le=10_000)
    confidence: float = Field(0.95, ge=0.5, lt=1)


class RecalibrationSettings(_Section):
    """``python -m flows recalibrate``: how labelled rows are split, refitted on and judged."""

    holdout_fraction: float = Field(0.3, gt=0, lt=1)   # the newest rows (or a stratified share) for the gate
    min_class_labels: int = Field(20, ge=2)            # per class, in the fitted rows and in the held-out rows
    folds: int = Field(5, ge=2, le=20)                 # cross-fitting folds of the fitted rows' metrics
    bootstrap: int = Field(1000, ge=100, le=100_000)   # paired bootstrap resamples of the held-out rows
    confidence: float = Field(0.95, gt=0.5, lt=1)
    # How much worse than version N's pair the recalibrated pair may be on the held-out rows (absolute
    # change); each difference is reported with its paired bootstrap interval.
    max_regression: dict[Literal["brier", "ece", "roc_auc"], float] = Field(default_factory=lambda: {
        "brier": 0.002, "ece": 0.01, "roc_auc": 0.02})


class Settings(_Section):
    """Resolved settings of one run."""

    model_name: str = Field("credit-risk", pattern=MODEL_NAME_PATTERN)
    seed: int = 42
    pipeline_home: Path = Path("artifacts")
    training: TrainingSettings = TrainingSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    export: ExportSettings = ExportSettings()
    mlflow: MlflowSettings = MlflowSettings()
    gate: GateSettings = GateSettings()
    recalibration: RecalibrationSettings = RecalibrationSettings()
    # How long a run waits for another run of the same model (its release numbering, a deploy or a
    # rollback) before it gives up; tasks/locks.py.
    lock_timeout_s: float = Field(3600, ge=0)

    @model_validator(mode="after")
    def _absolute_home(self) -> Settings:
        object.__setattr__(self, "pipeline_home", self.pipeline_home.expanduser().resolve())
        return self

    @property
    def models_dir(self) -> Path:
        return self.pipeline_home / "models" / self.model_name

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.pipeline_home / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.pipeline_home / "mlflow" / "artifacts"

    def threads(self) -> tuple[int, int]:
        cpus = available_cpus()
        return (self.training.intra_op_threads or cpus, self.training.inter_op_threads or min(2, cpus))


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None,
                  overrides: dict | None = None) -> Settings:
    """Read the YAML file, apply ``PIPELINE_HOME`` / ``MLFLOW_TRACKING_URI`` from ``env``, validate.

    Without ``path``, ``PIPELINE_CONFIG`` names the file (a worker's environment), else configs/pipeline.yaml.

    Raises:
        ConfigError: the file is unreadable or a key has an impossible value (the key is named).
    """
    env = dict(os.environ) if env is None else env
    path = Path(path or env.get("PIPELINE_CONFIG") or DEFAULT_CONFIG)
    data = read_config(path, "config")
    if env.get("PIPELINE_HOME"):
        data["pipeline_home"] = env["PIPELINE_HOME"]
    if env.get("MLFLOW_TRACKING_URI"):
        data.setdefault("mlflow", {})
        data["mlflow"] = {**(data["mlflow"] or {}), "tracking_uri": env["MLFLOW_TRACKING_URI"]}
    for key, value in (overrides or {}).items():
        section, _, leaf = key.rpartition(".")
        target = data
        for part in filter(None, section.split(".")):
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = value
    return _validated(Settings, data, path)


def read_config(path: Path, what: str) -> dict:
    """A YAML mapping from ``path``; anything else is a ConfigError naming the file."""
    data = read_yaml(path, what, ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _validated(model: type[BaseModel], data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(parts)) from None


# ---------------------------------------------------------------- monitoring thresholds

class LevelThresholds(_Section):
    warning: float = Field(gt=0)
    critical: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LevelThresholds:
        if self.critical < self.warning:
            raise ValueError(f"critical ({self.critical}) is below warning ({self.warning})")
        return self


class EceThresholds(LevelThresholds):
    critical_hours: int = Field(2, ge=1)
    # "ECE increasing trend over 24 hours": a least-squares line through the hourly ECE values of
    # the last day (hours with at least trend_min_labels labels, at least trend_min_points of them)
    # rising by trend_rise or more is a warning.
    trend_rise: float = Field(0.02, gt=0)
    trend_min_points: int = Field(4, ge=2)
    trend_min_labels: int = Field(50, ge=1)


class PsiThresholds(LevelThresholds):
    many_features: int = Field(3, ge=1)


class PredictionThresholds(_Section):
    mean_shift: float = Field(0.10, gt=0)
    variance_increase: float = Field(0.50, gt=0)
    extreme_share: float = Field(0.20, gt=0, le=1)


class LatencyThresholds(_Section):
    p95_warning: float = Field(100, gt=0)
    p95_critical: float = Field(200, gt=0)
    p95_minutes: int = Field(5, ge=1)
    p99_critical: float = Field(500, gt=0)
    p99_minutes: int = Field(2, ge=1)


class ErrorThresholds(LevelThresholds):
    minutes: int = Field(5, ge=1)
    server_errors: float = Field(0.001, gt=0)
    server_minutes: int = Field(10, ge=1)


class PerformanceThresholds(_Section):
    roc_auc_drop: float = Field(0.05, gt=0)
    precision_drop: float = Field(0.10, gt=0)


class VolumeThresholds(_Section):
    drop: float = Field(0.50, gt=0, lt=1)
    spike: float = Field(2.00, gt=0)
    min_requests: int = Field(100, ge=1)


class MonitoringSettings(_Section):
    """``configs/monitoring.yaml``: the guide's checklist thresholds."""

    lookback_minutes: int = Field(60, ge=1, le=24 * 60)
    min_rows_for_drift: int = Field(200, ge=1)
    min_labels: int = Field(200, ge=1)
    ece: EceThresholds = EceThresholds(warning=0.05, critical=0.10)
    psi: PsiThresholds = PsiThresholds(warning=0.15, critical=0.25)
    prediction: PredictionThresholds = PredictionThresholds()
    latency_ms: LatencyThresholds = LatencyThresholds()
    error_rate: ErrorThresholds = ErrorThresholds(warning=0.005, critical=0.01)
    performance: PerformanceThresholds = PerformanceThresholds()
    volume: VolumeThresholds = VolumeThresholds()
    host_attempts: int = Field(3, ge=1, le=10)          # before a host is called down
    host_retry_wait_s: float = Field(2.0, ge=0, le=60)
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"   # the routing key: $PIPELINE_PAGERDUTY_ROUTING_KEY


def load_monitoring(path: str | Path | None = None, env: dict[str, str] | None = None) -> MonitoringSettings:
    """Read ``path`` (else ``$PIPELINE_MONITORING``, else configs/monitoring.yaml) and validate it.

    Raises:
        ConfigError: unreadable, or a key has an impossible value (the key is named).
    """
    env = dict(os.environ) if env is None else env
    path = Path(path or env.get("PIPELINE_MONITORING") or DEFAULT_MONITORING)
    return _validated(MonitoringSettings, read_config(path, "monitoring config"), path)

