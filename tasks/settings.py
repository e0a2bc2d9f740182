"""The one configuration model: ``configs/pipeline.yaml`` plus environment overrides.

Validated once at the entry point (``load_settings``) and passed down; nothing
below reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.config import available_cpus
from tasks.constants import CONFIGS
from tasks.errors import ConfigError

DEFAULT_CONFIG = CONFIGS / "pipeline.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSettings(_Section):
    cv_folds: int = Field(5, ge=2, le=20)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.1, ge=0, lt=1)
    l2: float = Field(1e-5, ge=0)
    early_stopping_patience: int = Field(6, ge=1)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    min_rows: int = Field(100, ge=10)
    min_class_rows: int = Field(10, ge=2)
    intra_op_threads: int | None = Field(None, ge=1)
    inter_op_threads: int | None = Field(None, ge=1)


class CalibrationSettings(_Section):
    method: Literal["isotonic", "sigmoid"] = "isotonic"
    n_bins: int = Field(10, ge=2, le=100)


class ExportSettings(_Section):
    golden_examples: int = Field(32, ge=1, le=500)
    reference_bins: int = Field(10, ge=2, le=100)
    fidelity_tolerance: float = Field(1e-5, gt=0)


class MlflowSettings(_Section):
    tracking_uri: str | None = None
    experiment: str = "tabular-release"


Metric = Literal["roc_auc", "pr_auc", "brier", "ece"]


class Bound(_Section):
    min: float | None = None
    max: float | None = None


class GateSettings(_Section):
    bounds: dict[Metric, Bound] = Field(default_factory=lambda: {
        "roc_auc": Bound(min=0.7), "pr_auc": Bound(min=0.3), "brier": Bound(max=0.2), "ece": Bound(max=0.05)})
    # How much worse than the champion a candidate may be (absolute change).
    max_regression: dict[Metric, float] = Field(default_factory=lambda: {
        "roc_auc": 0.01, "pr_auc": 0.02, "brier": 0.01, "ece": 0.02})


class Settings(_Section):
    """Resolved settings of one run."""

    model_name: str = Field("credit-risk", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 42
    pipeline_home: Path = Path("artifacts")
    training: TrainingSettings = TrainingSettings()
    calibration: CalibrationSettings = CalibrationSettings()
    export: ExportSettings = ExportSettings()
    mlflow: MlflowSettings = MlflowSettings()
    gate: GateSettings = GateSettings()

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
    import yaml

    env = dict(os.environ) if env is None else env
    path = Path(path or env.get("PIPELINE_CONFIG") or DEFAULT_CONFIG)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
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
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(parts)) from None
