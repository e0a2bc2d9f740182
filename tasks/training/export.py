"""Stage 3: export a version directory ``models/<name>/<N>/`` laid out as the handover guide says.

    saved_model/      the network with its preprocessing; takes raw named features
    calibrator.pkl    the calibrator, bound to this SavedModel's digest
    metadata.json     metrics, contract, file manifest, golden examples, drift references

``N`` is the registry version reserved for this release (``tasks.registry.runs.reserve``), never a
count of this machine's directories: workers sharing one registry cannot both write "3". The
directory is assembled in a staging folder beside its final place, checked end to end through the
serving loader, then renamed into place, so ``N/`` either does not exist or is complete; an
existing ``N/`` is never replaced.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from serving.contract.binning import bin_fractions, quantile_edges
from serving.contract.calibration import dump_calibrator
from serving.contract.metadata import (
    CALIBRATOR_FILE,
    METADATA_FILE,
    SAVED_MODEL_DIR,
    GoldenExample,
    InputSpec,
    ModelMetadata,
    hash_tree,
    saved_model_digest,
)
from serving.contract.model import LoadedModel
from serving.contract.schema import FeatureList, Schema, feature_schema_hash, tensor_name
from tasks.constants import GOLDEN_TOLERANCE
from tasks.errors import TrainingError
from tasks.settings import Settings
from tasks.training.calibrate import CalibrationResult
from tasks.training.data import Dataset
from tasks.training.train import TrainResult, predict_raw

log = logging.getLogger(__name__)

PREDICTION_EDGES = [round(0.1 * i, 1) for i in range(1, 10)]
EXTREME_LOW, EXTREME_HIGH = 0.05, 0.95


@dataclass(frozen=True)
class ExportedModel:
    version: str
    release: str
    path: Path
    metadata: ModelMetadata
    fidelity_max_abs_diff: float
    golden_max_abs_diff: float


def golden_rows(ds: Dataset, schema: Schema, features: FeatureList, n: int, seed: int) -> list[dict]:
    """A few dozen rows, both classes and rows with gaps included, as JSON-ready raw inputs."""
    rng = np.random.default_rng(seed)
    has_null = np.zeros(ds.n_rows, dtype=bool)
    for name in features.names:
        col = ds.columns[name]
        has_null |= (col == "") if col.dtype == object else np.isnan(col)
    quotas = ((np.flatnonzero(has_null), n // 4), (np.flatnonzero(ds.y == 1), n // 4), (np.arange(ds.n_rows), n))
    picks: list[int] = []
    for pool, quota in quotas:
        free = np.setdiff1d(pool, picks)
        take = min(free.size, quota, n - len(picks))
        if take:
            picks += rng.choice(free, size=take, replace=False).tolist()
    picks = sorted(picks)
    rows = []
    for i in picks:
        row: dict = {}
        for name in features.names:
            spec = schema.column(name)
            v = ds.columns[name][i]
            if spec.type == "categorical":
                row[name] = None if v == "" else str(v)
            elif np.isnan(v):
                row[name] = None
            elif spec.type == "integer":
                row[name] = int(v)
            elif spec.type == "boolean":
                row[name] = bool(v)
            else:
                row[name] = float(v)
        rows.append(row)
    return rows


def reference_distributions(ds: Dataset, schema: Schema, features: FeatureList, predictions: np.ndarray,
                            n_bins: int) -> dict:
    """Frozen baselines for drift monitoring (PSI) and the prediction-distribution alarms."""
    numeric, categorical = {}, {}
    for name in features.names:
        spec = schema.column(name)
        values = ds.columns[name]
        if spec.type == "categorical":
            null = values == ""
            present = values[~null]
            cats = list(spec.categories)
            counts = {c: int(np.sum(present == c)) for c in cats}
            categorical[name] = {"categories": cats,
                                 "frequencies": {c: counts[c] / max(present.size, 1) for c in cats},
                                 "null_fraction": float(null.mean())}
        elif spec.type == "boolean":
            present = values[~np.isnan(values)]
            categorical[name] = {"categories": ["false", "true"],
                                 "frequencies": {"false": float(np.mean(present == 0)) if present.size else 0.0,
                                                 "true": float(np.mean(present == 1)) if present.size else 0.0},
                                 "null_fraction": float(np.isnan(values).mean())}
        else:
            edges = quantile_edges(values, n_bins)
            present = values[~np.isnan(values)]
            numeric[name] = {"edges": edges, "fractions": bin_fractions(values, edges),
                             "null_fraction": float(np.isnan(values).mean()),
                             "min": float(present.min()), "max": float(present.max())}
    return {"rows": ds.n_rows, "numeric": numeric, "categorical": categorical,
            "prediction": prediction_reference(predictions)}


def prediction_reference(predictions: np.ndarray) -> dict:
    """The predictions' frozen baseline: fractions on PREDICTION_EDGES, mean, std and extremes."""
    p = np.asarray(predictions, dtype=np.float64)
    return {"edges": PREDICTION_EDGES, "fractions": bin_fractions(p, PREDICTION_EDGES),
            "mean": float(p.mean()), "std": float(p.std()),
            "extreme_fraction": float(np.mean((p < EXTREME_LOW) | (p > EXTREME_HIGH)))}


def write_saved_model(model, stats, path: Path) -> None:
    """Two endpoints: ``serving_default`` takes one tensor per named feature (TF Serving style);
    ``serve_packed`` takes all numbers as one float64 matrix and all categories as one string
    matrix (columns in ``metadata.inputs`` order), which costs the server two tensors a call
    instead of one per feature.
    """
    import keras
    import tensorflow as tf

    numeric = [tensor_name(s.name) for s in stats if s.kind != "categorical"]
    categorical = [tensor_name(s.name) for s in stats if s.kind == "categorical"]
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = {tensor_name(s.name): tf.TensorSpec([None], tf.string if s.kind == "categorical" else tf.float64,
                                               name=tensor_name(s.name)) for s in stats}
    archive.add_endpoint("serve", lambda inputs: model(inputs, training=False), input_signature=[spec])

    def packed(numbers, categories):
        inputs = {name: numbers[:, i] for i, name in enumerate(numeric)}
        inputs |= {name: categories[:, j] for j, name in enumerate(categorical)}
        return model(inputs, training=False)

    archive.add_endpoint("serve_packed", packed, input_signature=[
        tf.TensorSpec([None, len(numeric)], tf.float64, name="numbers"),
        tf.TensorSpec([None, len(categorical)], tf.string, name="categories")])
    archive.write_out(str(path), verbose=False)


def _taken(final: Path) -> str:
    return (f"export: {final} already exists; registry versions name export directories, so this pipeline home "
            "holds an export its registry did not number (another registry's, or one from before versions were "
            "reserved): move it away or use another PIPELINE_HOME")


def staging_for(models_dir: Path, version: str) -> tuple[Path, Path]:
    """(a new staging folder's path beside it, the version directory ``models_dir/<version>``).

    Raises:
        TrainingError: the version directory exists; it is never replaced.
    """
    final = models_dir / version
    if final.exists():
        raise TrainingError(_taken(final))
    models_dir.mkdir(parents=True, exist_ok=True)
    return models_dir / f".staging-{uuid.uuid4().hex}", final


def record_golden(staging: Path, metadata: ModelMetadata, model: LoadedModel,
                  golden: list[dict]) -> tuple[ModelMetadata, float]:
    """Golden expectations from the serving loader itself (``model``, loaded from ``staging``), written into
    metadata.json, then re-checked through a fresh load; returns the metadata and the largest |Δp|.

    Raises:
        TrainingError: the reloaded version misses its golden examples by more than GOLDEN_TOLERANCE.
    """
    raw, prob = model.score_rows(golden)
    metadata = metadata.model_copy(update={"golden_examples": [
        GoldenExample(features=row, raw_score=float(r), probability=float(p))
        for row, r, p in zip(golden, raw, prob)]})
    (staging / METADATA_FILE).write_text(metadata.to_json())
    golden_error = LoadedModel.load(staging).golden_max_error()
    if golden_error > GOLDEN_TOLERANCE:
        raise TrainingError(f"export: the reloaded model misses its golden examples by {golden_error:.2e}")
    return metadata, golden_error


def publish(staging: Path, final: Path) -> None:
    """Flush ``staging`` to disk and rename it to ``final`` (its parent flushed too): ``final`` either does not
    exist or is complete.

    Raises:
        TrainingError: ``final`` exists (left as it is).
    """
    _fsync_tree(staging)
    try:
        os.rename(staging, final)   # fails on a non-empty N/: never replaced
    except OSError:
        raise TrainingError(_taken(final)) from None
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(Path(dirpath) / name, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_model(train: TrainResult, cal: CalibrationResult, ds: Dataset, schema: Schema, features: FeatureList,
                 settings: Settings, release: str, lineage: dict | None = None, *, version: str) -> ExportedModel:
    """Write and verify the version directory ``models/<name>/<version>/``; returns where it is and what is in it.

    Args:
        version: the registry version reserved for this release: the directory's name and the served version.

    Raises:
        TrainingError: the SavedModel does not reproduce the Keras model, the reloaded version does
            not reproduce its own golden examples, or ``<version>/`` already exists (left as it is).
    """
    import keras
    import tensorflow as tf

    staging, final = staging_for(settings.models_dir, version)
    try:
        write_saved_model(train.model, train.stats, staging / SAVED_MODEL_DIR)
        digest = saved_model_digest(hash_tree(staging))
        calibrator = cal.calibrator.bound_to(digest)
        dump_calibrator(calibrator, staging / CALIBRATOR_FILE)
        files = hash_tree(staging)

        inputs = [InputSpec(name=s.name, type=schema.column(s.name).type,
                            dtype="string" if s.kind == "categorical" else "float64") for s in train.stats]
        golden = golden_rows(ds, schema, features, settings.export.golden_examples, settings.seed)
        sample = np.sort(np.random.default_rng(settings.seed).choice(ds.n_rows, min(2000, ds.n_rows), replace=False))
        keras_raw = predict_raw(train.model, ds.columns, train.stats, sample)

        schema_dump = schema.model_dump(mode="json", exclude_none=True)
        metadata = ModelMetadata(
            version=version, release=release, model_name=settings.model_name, model_type=train.model_type,
            calibrator_method=cal.method, training_date=datetime.now(UTC).isoformat(timespec="seconds"),
            cv_metrics=cal.metrics_after, calibration=cal.summary,
            schema=schema_dump, schema_hash=schema.digest(),
            feature_schema_hash=feature_schema_hash(schema, features),
            feature_list=[f.model_dump(mode="json", exclude_none=True) for f in features.features],
            inputs=inputs, files=files, model_digest=digest,
            golden_examples=[GoldenExample(features=row, raw_score=0.0, probability=0.0) for row in golden],
            # Out of sample: each row's cross-fitted calibrated score, from fold models and a calibrator
            # that never saw it (the shipped calibrator applied to oof_raw would have seen every row).
            reference=reference_distributions(ds, schema, features, cal.oof_calibrated,
                                              settings.export.reference_bins),
            training={"rows": ds.n_rows, "positives": ds.positives, "cv_folds": len(train.folds),
                      "folds": [f.__dict__ for f in train.fold_results], "ensemble_members": train.ensemble_members,
                      "params": train.params, "search": train.search,
                      "timings": train.timings, "rows_per_second": train.training_rows_per_second,
                      "cv_metrics_raw": cal.metrics_before},
            lineage={"data": ds.source, "data_sha256": ds.sha256, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "python": platform.python_version(), **(lineage or {})},
        )
        # Golden expectations come from the serving loader itself, then are re-checked through it.
        (staging / METADATA_FILE).write_text(metadata.to_json())
        model = LoadedModel.load(staging)
        # Both endpoints of the exported graph must compute what the trained model computes.
        columns = {i.name: ds.columns[i.name][sample] for i in inputs}
        fidelity = max(float(np.max(np.abs(model.raw_scores(columns, named=named) - keras_raw)))
                       for named in (True, False))
        if fidelity > settings.export.fidelity_tolerance:
            raise TrainingError(f"export: the SavedModel differs from the trained model by {fidelity:.2e} "
                                f"(tolerance {settings.export.fidelity_tolerance:.0e})")
        metadata, golden_error = record_golden(staging, metadata, model, golden)
        publish(staging, final)
        log.info("exported %s release %s to %s", version, release, final)
        return ExportedModel(version=version, release=release, path=final, metadata=metadata,
                             fidelity_max_abs_diff=fidelity, golden_max_abs_diff=golden_error)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
