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


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"   # a registered model's name, and its directory

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParallelSettings(_Section):
    """Where the cross-validation folds are fitted (``flows.training``)."""

    runner: Literal["serial", "dask"] = Field("serial", description=(
        "serial: one fold after another in the release's process; dask: as parallel Prefect tasks on a Dask cluster"))
    address: str | None = Field(None, description="a Dask scheduler, tcp://host:8786; null: a local cluster here")
    workers: int | None = Field(None, ge=1, description=(
        "the local Dask cluster's worker processes; null: the CPUs, at most cv_folds"))


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

    enabled: bool = Field(True, description="search at all; off: the configured network alone")
    budget_s: float | None = Field(300, gt=0, description=(
        "wall-clock seconds for the whole search, the configured network included (it always runs); a candidate "
        "starts only while the time spent plus one more candidate fits; null: no limit"))
    candidates: tuple[dict[str, Any], ...] = Field(DEFAULT_CANDIDATES, description=(
        "each a mapping of training keys to values, tried in order after the configured network, which is kept "
        "unless one beats it by more than a standard error; searchable: " + ", ".join(sorted(SEARCHABLE))))

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
    """How the network is trained: one model per cross-validation fold, all of them shipped together."""

    cv_folds: int = Field(5, ge=2, le=20, description=(
        "cross-validation folds: each fold's model is scored on the rows it never saw (the out-of-fold metrics)"))
    epochs: int = Field(60, ge=1, description="most passes over a fold's training rows (early stopping may end sooner)")
    batch_size: int = Field(256, ge=1, description="rows per gradient step")
    learning_rate: float = Field(3e-3, gt=0, description="the optimiser's initial learning rate")
    hidden_units: tuple[int, ...] = Field((64, 32), description="units of each hidden layer, input side first")
    dropout: float = Field(0.1, ge=0, lt=1, description="share of a hidden layer's units dropped at each training step")
    l2: float = Field(1e-5, ge=0, description="L2 weight penalty of the hidden layers")
    early_stopping_patience: int = Field(6, ge=1, description=(
        "epochs without a better validation loss before a fold's training stops (its best weights are kept)"))
    lr_schedule: Literal["constant", "plateau", "cosine"] = Field("cosine", description=(
        "constant | plateau (halve the rate when validation loss stalls) | cosine (decay over `epochs`)"))
    numeric_embedding: Literal["none", "periodic"] = Field("periodic", description=(
        "periodic: PLR embeddings of numeric features (Gorishniy et al. 2022); none: the standardised value only"))
    embedding_frequencies: int = Field(16, ge=1, le=128, description="k: sin/cos pairs per numeric feature")
    embedding_sigma: float = Field(0.1, gt=0, description=(
        "initial frequencies ~ N(0, sigma); larger fits finer detail (and overfits small sets)"))
    embedding_dim: int = Field(4, ge=1, le=64, description="per-feature output of the embedding's Linear + ReLU")
    embedding_with_value: bool = Field(True, description="feed the standardised value beside its embedding")
    wide_buckets: int = Field(0, ge=0, le=1 << 22, description=(
        "Wide & Deep's memorisation path (Cheng et al. 2016): a learned logit per hashed cross of all the raw "
        "feature values, this many buckets per fold model; pays where whole feature vectors repeat (panel data); "
        "0: off"))
    validation_fraction: float = Field(0.15, gt=0, lt=0.5, description=(
        "share of a fold's training rows held out for early stopping (never the out-of-fold rows)"))
    min_rows: int = Field(100, ge=10, description="fewest data rows a release trains on (fewer: a data error)")
    min_class_rows: int = Field(10, ge=2, description="fewest rows of each class a release trains on")
    intra_op_threads: int | None = Field(None, ge=1, description=(
        "TensorFlow's threads inside one operation while training; null: the CPUs available"))
    inter_op_threads: int | None = Field(None, ge=1, description=(
        "TensorFlow's operations run side by side while training; null: 2, or 1 on one CPU"))
    parallel: ParallelSettings = Field(ParallelSettings(), description="where the cross-validation folds are fitted")
    search: SearchSettings = Field(SearchSettings(), description=(
        "a small search over network sizes (tasks/training/search.py)"))

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
    """How the out-of-fold scores become probabilities (tasks/training/calibrate.py)."""

    method: Literal["auto", "none", "sigmoid", "beta", "isotonic"] = Field("auto", description=(
        "auto: every candidate is measured cross-fitted and the simplest within one standard error of the lowest "
        "Brier is shipped; the others ship that calibrator"))
    n_bins: int = Field(10, ge=2, le=100, description="probability bins of ECE and the reliability diagram")


class ExportSettings(_Section):
    """What the exported model carries besides its network (tasks/training/export.py)."""

    golden_examples: int = Field(32, ge=1, le=500, description=(
        "training rows shipped with their expected probabilities; a server loading the model checks them"))
    reference_bins: int = Field(10, ge=2, le=100, description="quantile bins per numeric feature, for PSI")
    fidelity_tolerance: float = Field(1e-5, gt=0, description=(
        "largest |difference| allowed between the exported model's and the trained model's scores"))


class MlflowSettings(_Section):
    """Where runs and registered versions are recorded."""

    tracking_uri: str | None = Field(None, description=(
        "the MLflow tracking and registry URI ($MLFLOW_TRACKING_URI wins); null: SQLite under pipeline_home/mlflow"))
    experiment: str = Field("tabular-release", description="the MLflow experiment the release runs are logged in")


# Absolute metrics, and the same relative to what chance gives on the data's positive rate p
# (tasks.metrics.chance_relative): pr_auc_lift = PR-AUC / p, brier_skill = 1 - Brier / (p (1 - p)),
# ece_relative = ECE / min(p, 1 - p). The relative ones mean the same on a 5 % and a 50 % positive rate.
Metric = Literal["roc_auc", "pr_auc", "brier", "ece", "pr_auc_lift", "brier_skill", "ece_relative"]


class Bound(_Section):
    min: float | None = None
    max: float | None = None


class GateSettings(_Section):
    bounds: dict[Metric, Bound] = Field(default_factory=lambda: {
        "roc_auc": Bound(min=0.7), "pr_auc_lift": Bound(min=1.25), "brier_skill": Bound(min=0.0),
        "ece_relative": Bound(max=0.25)}, description=(
        "min and max of the candidate's cross-validated metrics; the defaults hold on any positive rate p: ROC-AUC "
        "(chance 0.5), PR-AUC at least 1.25 p, Brier no worse than always predicting p, ECE at most a quarter of "
        "min(p, 1 - p)"))
    max_regression: dict[Metric, float] = Field(default_factory=lambda: {
        "roc_auc": 0.01, "pr_auc_lift": 0.1, "brier_skill": 0.05, "ece_relative": 0.1}, description=(
        "how much worse than the champion a candidate may be, per metric (absolute change), judged on the same "
        "rows with a paired bootstrap interval when there are any"))
    holdout_fraction: float = Field(0.2, ge=0.05, le=0.5, description=(
        "without --eval-data, when the schema names a time_column: the most recent share of the rows, held out "
        "from training, that both models are scored on"))
    min_eval_rows: int = Field(100, ge=10, description="fewest evaluation rows (fewer: an error naming the count)")
    bootstrap_resamples: int = Field(1000, ge=100, le=10_000, description=(
        "paired, stratified resamples behind each difference's interval"))
    confidence: float = Field(0.95, ge=0.5, lt=1, description="confidence level of those intervals")


class RecalibrationSettings(_Section):
    """``python -m flows recalibrate``: how labelled rows are split, refitted on and judged."""

    holdout_fraction: float = Field(0.3, gt=0, lt=1, description=(
        "share of the labelled rows held out for the gate: the newest (or a stratified share)"))
    min_class_labels: int = Field(20, ge=2, description=(
        "fewest labels per class, in the fitted rows and in the held-out rows"))
    folds: int = Field(5, ge=2, le=20, description="cross-fitting folds of the fitted rows' metrics")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="paired bootstrap resamples of the held-out rows")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence level of the paired bootstrap intervals")
    max_regression: dict[Literal["brier", "ece", "roc_auc"], float] = Field(default_factory=lambda: {
        "brier": 0.002, "ece": 0.01, "roc_auc": 0.02}, description=(
        "how much worse than version N's pair the recalibrated pair may be on the held-out rows (absolute change); "
        "each difference is reported with its paired bootstrap interval"))


class ScoringSettings(_Section):
    """``python -m flows score``: a registered version scoring a file or a directory of files."""

    chunk_rows: int = Field(50_000, ge=100, le=5_000_000, description=(
        "rows read, validated and scored at a time: the job's memory is bounded by this, not by the input"))
    max_reject_fraction: float = Field(0.01, ge=0, le=1, description=(
        "share of the input's rows that may break the contract (written to the rejects file) before the job "
        "fails and writes nothing"))


class Settings(_Section):
    """Resolved settings of one run."""

    model_name: str = Field("credit-risk", pattern=MODEL_NAME_PATTERN, description=(
        "the registered model's name, and its directory under pipeline_home/models/"))
    seed: int = Field(42, description="seeds the folds, the network and the samples: same seed, same data, same model")
    pipeline_home: Path = Field(Path("artifacts"), description=(
        "where all state lives ($PIPELINE_HOME wins); relative to the working directory"))
    training: TrainingSettings = Field(TrainingSettings(), description="how the network is trained")
    calibration: CalibrationSettings = Field(CalibrationSettings(), description="how scores become probabilities")
    export: ExportSettings = Field(ExportSettings(), description="what the exported model carries")
    mlflow: MlflowSettings = Field(MlflowSettings(), description="where runs and versions are recorded")
    gate: GateSettings = Field(GateSettings(), description="what a candidate must reach to be released")
    recalibration: RecalibrationSettings = Field(RecalibrationSettings(), description=(
        "python -m flows recalibrate: how labelled rows are split, refitted on and judged"))
    scoring: ScoringSettings = Field(ScoringSettings(), description="python -m flows score: batch scoring")
    lock_timeout_s: float = Field(3600, ge=0, description=(
        "how long a run waits for another run of the same model (its release numbering, a deploy or a rollback) "
        "before it gives up (tasks/locks.py)"))

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


def config_path(path: str | Path | None, env: dict[str, str]) -> Path:
    """The pipeline config to read: ``path``, else ``$PIPELINE_CONFIG`` (a worker's environment), else the default."""
    return Path(path or env.get("PIPELINE_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None,
                  overrides: dict | None = None) -> Settings:
    """Read the YAML file ``config_path`` names, apply ``PIPELINE_HOME`` / ``MLFLOW_TRACKING_URI`` from ``env``,
    validate.

    Raises:
        ConfigError: the file is unreadable or a key has an impossible value (the key is named).
    """
    env = dict(os.environ) if env is None else env
    path = config_path(path, env)
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
