"""Reserve a model version in MLflow, then record the training run and the model into it.

The version comes first (``reserve``): MLflow numbers versions atomically per model, so its number
is the one identity of a release: the export directory ``models/<name>/<N>/``, the host's
``releases/<N>/`` and the bundle ``<name>-<N>.zip`` are named by it, and two workers sharing one
registry can never both write "3". The reservation holds an MLflow run and a logged model; once
the export exists, ``log_and_register`` fills them: params, metrics (per fold too), the reliability
diagram, metadata.json and the pyfunc ("models from code", ``pyfunc_model.py``) that scores through
the server's own verified loader. Tags make each version self-describing; ``release_status`` says
how far it got (reserved, registered, failed).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.contract.digest import sha256_file
from serving.contract.metadata import METADATA_FILE
from tasks.constants import SERVING_DIR
from tasks.errors import RegistryError
from tasks.lineage import CODE_TAGS
from tasks.registry.links import redact, safe_uri, tracking_uri
from tasks.settings import Settings

PYFUNC_FILE = Path(__file__).resolve().with_name("pyfunc_model.py")


RESERVED, REGISTERED, FAILED = "reserved", "registered", "failed"


@dataclass(frozen=True)
class Reservation:
    """A registry version taken before the export: its number, release, run and logged model."""

    name: str
    version: str
    release: str
    run_id: str
    model_id: str


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else value
    return out


def input_example(metadata, rows: int = 5):
    """The first golden rows as a DataFrame typed as a client would send them."""
    import pandas as pd

    from serving.contract.schema import schema_from_dict

    schema = schema_from_dict(metadata.schema_)
    frame = pd.DataFrame([g.features for g in metadata.golden_examples[:rows]])
    for spec in metadata.inputs:
        nullable = schema.column(spec.name).nullable
        if spec.type == "categorical":
            frame[spec.name] = frame[spec.name].astype(object)
        elif spec.type == "boolean" and not nullable:
            frame[spec.name] = frame[spec.name].astype(bool)
        elif spec.type == "integer" and not nullable:
            frame[spec.name] = frame[spec.name].astype("int64")
        else:
            frame[spec.name] = frame[spec.name].astype("float64")
    return frame[[i.name for i in metadata.inputs]]


def serving_requirements() -> list[str]:
    path = SERVING_DIR / "requirements.txt"
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _experiment_id(client, settings: Settings) -> str:
    exp = client.get_experiment_by_name(settings.mlflow.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.as_uri()
    return client.create_experiment(settings.mlflow.experiment, artifact_location=location)


def reserve(client, settings: Settings, release: str, tags: dict[str, str]) -> Reservation:
    """A new version of the registered model (created if need be), numbered by MLflow, with its run and
    logged model; tagged with ``release`` and ``tags`` in the same write, so no reader sees it untagged.

    The caller holds the model's release lock (``tasks.locks``): the release number was read from the
    versions before this one and must not interleave with another run's reservation.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    name = settings.model_name
    # The SQL store resolves a models:/<id> source through the fluent API's tracking URI.
    with tracking_uri(settings.tracking_uri):
        experiment = _experiment_id(client, settings)
        run = client.create_run(experiment, run_name=f"{name}-{release}", tags={"release": release})
        model = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = client.create_model_version(name, source=f"models:/{model.model_id}", run_id=run.info.run_id,
                                         model_id=model.model_id,
                                         tags={"release": release, "release_status": RESERVED, **tags})
        version = str(mv.version)
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [{"name": name, "version": version}])})
        client.set_tag(run.info.run_id, "registered_version", version)
    return Reservation(name, version, release, run.info.run_id, model.model_id)


def abandon(client, reservation: Reservation, reason: str) -> None:
    """A reserved version that will not be registered keeps its number (never reused) and says why."""
    name, version = reservation.name, reservation.version
    client.set_model_version_tag(name, version, "release_status", FAILED)
    client.set_model_version_tag(name, version, "release_error", reason[:4000])
    if client.get_run(reservation.run_id).info.status == "RUNNING":
        client.set_terminated(reservation.run_id, "FAILED")
    client.finalize_logged_model(reservation.model_id, "FAILED")


def _code_tags(metadata) -> dict[str, str]:
    """The code's commit, tag and dirtiness (tasks.lineage) as MLflow tags; unknown ones are left out."""
    return {key: str(metadata.lineage[key]) for key in CODE_TAGS if metadata.lineage.get(key) is not None}


def calibration_record(calibration) -> tuple[dict[str, str], dict[str, float]]:
    """MLflow params and metrics for the calibration choice: what was asked for and why this one was shipped,
    and every candidate's cross-fitted metrics side by side (``calibration_<candidate>_<metric>``)."""
    params = {"calibration.requested": calibration.requested or calibration.method,
              "calibration.reason": calibration.reason}
    metrics = {f"calibration_{name}_{key}": value for name, candidate in calibration.candidates.items()
               for key, value in candidate.items()}
    return params, metrics


def search_record(search: dict | None) -> tuple[dict[str, str], dict[str, float]]:
    """MLflow params and metrics for the search over network sizes: which candidate was chosen and why,
    and every tried candidate's inner-validation figures (``search_<index>_val_loss``)."""
    if not search:
        return {}, {}
    params = {"search.chosen": search["chosen"], "search.reason": search["reason"],
              "search.budget_s": search["budget_s"],
              "search.skipped": ",".join(str(c["index"]) for c in search["candidates"] if c["status"] == "skipped")}
    metrics = {f"search_{c['index']}_{key}": c[key] for c in search["candidates"] if c["status"] != "skipped"
               for key in ("val_loss", "val_auc", "seconds")}
    return params, metrics


def log_and_register(client, settings: Settings, reservation: Reservation, *, exported, calibration, train,
                     input_example, params: dict, extra_tags: dict[str, str]) -> RegisteredVersion:
    """Fill the reserved version: the run's params, metrics, diagram and metadata, the model, the tags.

    Raises:
        RegistryError: MLflow refused (names the tracking URI, without credentials).
    """
    metadata = exported.metadata
    metrics = {f"cv_{k}": v for k, v in metadata.cv_metrics.items()}
    metrics |= {f"raw_{k}": v for k, v in calibration.metrics_before.items()}
    metrics |= {"ece_before": calibration.metrics_before["ece"], "ece_after": calibration.metrics_after["ece"],
                "training_rows_per_second": train.training_rows_per_second,
                "export_fidelity_max_abs_diff": exported.fidelity_max_abs_diff,
                "golden_max_abs_diff": exported.golden_max_abs_diff,
                "ensemble_members": train.ensemble_members}
    metrics |= {k: v for k, v in train.timings.items()}
    calibration_params, calibration_metrics = calibration_record(calibration)
    metrics |= calibration_metrics
    search_params, search_metrics = search_record(train.search)
    metrics |= search_metrics
    return register_export(client, settings, reservation, exported=exported, input_example=input_example,
                           params={**params, **calibration_params, **search_params}, metrics=metrics,
                           steps=[(fold.fold, {f"fold_{k}": v for k, v in fold.metrics.items()})
                                  for fold in train.fold_results],
                           artifacts=[(calibration.diagram, "calibration")] if calibration.diagram else [],
                           extra_tags=extra_tags)


def register_export(client, settings: Settings, reservation: Reservation, *, exported, input_example, params: dict,
                    metrics: dict[str, float], steps: list[tuple[int, dict]], artifacts: list[tuple[Path, str]],
                    extra_tags: dict[str, str]) -> RegisteredVersion:
    """Fill the reserved version with an export: the run's params, metrics (``steps``: per step, e.g. per fold),
    ``artifacts`` (file, run directory), metadata.json, the pyfunc model and the version's tags.

    Raises:
        RegistryError: MLflow refused (names the tracking URI, without credentials).
    """
    import mlflow
    from mlflow.models import infer_signature

    name = settings.model_name
    metadata = exported.metadata
    try:
        with tracking_uri(settings.tracking_uri), mlflow.start_run(run_id=reservation.run_id) as run:
            mlflow.log_params(_flatten("", params, {}))
            mlflow.log_metrics(metrics)
            for step, values in steps:
                mlflow.log_metrics(values, step=step)
            for path, directory in artifacts:
                mlflow.log_artifact(str(path), directory)
            mlflow.log_artifact(str(exported.path / "metadata.json"), "export")
            golden = exported.metadata.golden_examples[: len(input_example)]
            signature = infer_signature(input_example, np.asarray([g.probability for g in golden]))
            with warnings.catch_warnings():
                # The signature is built from typed example rows on purpose (see input_example).
                warnings.simplefilter("ignore", UserWarning)
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=str(PYFUNC_FILE), artifacts={"model": str(exported.path)},
                    code_paths=[str(SERVING_DIR)], signature=signature, input_example=input_example,
                    pip_requirements=serving_requirements(), model_id=reservation.model_id,
                )
            version = reservation.version
            tags = {"release": metadata.release, "export_version": metadata.version,
                    "model_dir": str(exported.path), "schema_hash": metadata.schema_hash,
                    "feature_schema_hash": metadata.feature_schema_hash, "model_digest": metadata.model_digest,
                    "metadata_sha256": sha256_file(exported.path / METADATA_FILE),
                    "data_sha256": metadata.lineage.get("data_sha256", ""),
                    **_code_tags(metadata),
                    "cv_metrics": json.dumps(metadata.cv_metrics), "mlflow_run_id": run.info.run_id,
                    "calibrator_method": metadata.calibrator_method, **extra_tags,
                    "release_status": REGISTERED}
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
            mlflow.set_tags({"release": metadata.release, "registered_version": version,
                             "export_version": metadata.version,
                             **_code_tags(metadata)})
    except RegistryError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("mlflow"):
            raise RegistryError(f"MLflow at {safe_uri(settings.tracking_uri)}: registering '{name}' failed: "
                                f"{redact(str(exc))}") from None
        raise
    return RegisteredVersion(name, version, run.info.run_id, info.model_uri)
