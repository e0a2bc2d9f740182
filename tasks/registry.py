"""Stage 4: record the run in MLflow and register the version; aliases, never stages.

``MlflowRegistry`` is the seam: the flow talks to it, tests use a real SQLite
store. Tags on each model version make it self-describing (release, export
directory, hashes, gate verdict), so no version number has to be remembered.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.errors import IntegrityError, RegistryError
from tasks.settings import Settings
from tasks.versioning import PriorRelease

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
ROLLED_BACK = "rolled_back_from_to"   # tag on a version the champion was rolled back from
ROOT = Path(__file__).resolve().parent.parent
PYFUNC_FILE = Path(__file__).resolve().with_name("pyfunc_model.py")
SERVING_DIR = ROOT / "serving"


def safe_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` (a database or server URI with credentials in it)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str


@dataclass(frozen=True)
class Champion:
    version: str
    release: str | None
    metrics: dict[str, float]


@contextmanager
def tracking_uri(uri: str):
    """Point MLflow's fluent API at ``uri`` for a block, then restore it.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the process
    environment; left in place, a later run with another pipeline home would log to
    this home's store.
    """
    import mlflow

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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

    from serving.schema import schema_from_dict

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


class MlflowRegistry:
    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.name = settings.model_name
        if settings.tracking_uri.startswith("sqlite:///"):
            Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    # ------------------------------------------------------------ queries
    def _versions(self):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {self._where()}: cannot list versions of '{self.name}': {exc}") from None

    def _where(self) -> str:
        return safe_uri(self.settings.tracking_uri)

    def prior_release(self) -> PriorRelease | None:
        """The latest registered version's release and feature-schema hash."""
        tagged = [v for v in self._versions() if v.tags.get("release") and v.tags.get("feature_schema_hash")]
        if not tagged:
            return None
        latest = max(tagged, key=lambda v: int(v.version))
        return PriorRelease(latest.tags["release"], latest.tags["feature_schema_hash"])

    def alias_version(self, alias: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def champion(self) -> Champion | None:
        mv = self.alias_version(CHAMPION)
        if mv is None:
            return None
        metrics = json.loads(mv.tags.get("cv_metrics", "{}"))
        if not metrics and mv.run_id:
            run_metrics = self.client.get_run(mv.run_id).data.metrics
            metrics = {k.removeprefix("cv_"): v for k, v in run_metrics.items() if k.startswith("cv_")}
        return Champion(version=str(mv.version), release=mv.tags.get("release"), metrics=metrics)

    # ------------------------------------------------------------ writes
    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.settings.mlflow.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.settings.tracking_uri.startswith("sqlite:"):
            self.settings.artifact_root.mkdir(parents=True, exist_ok=True)
            location = self.settings.artifact_root.as_uri()
        return self.client.create_experiment(self.settings.mlflow.experiment, artifact_location=location)

    def log_and_register(self, *, exported, calibration, train, input_example, params: dict,
                         extra_tags: dict[str, str]) -> RegisteredVersion:
        """One MLflow run with params, metrics, diagram and metadata; then a new registered version."""
        import mlflow
        from mlflow.models import infer_signature

        metadata = exported.metadata
        metrics = {f"cv_{k}": v for k, v in metadata.cv_metrics.items()}
        metrics |= {f"raw_{k}": v for k, v in calibration.metrics_before.items()}
        metrics |= {"ece_before": calibration.metrics_before["ece"], "ece_after": calibration.metrics_after["ece"],
                    "training_rows_per_second": train.training_rows_per_second,
                    "export_fidelity_max_abs_diff": exported.fidelity_max_abs_diff,
                    "golden_max_abs_diff": exported.golden_max_abs_diff,
                    "final_epochs": train.final_epochs}
        metrics |= {k: v for k, v in train.timings.items()}
        try:
            with tracking_uri(self.settings.tracking_uri), mlflow.start_run(experiment_id=self._experiment_id(),
                                  run_name=f"{self.name}-{metadata.release}") as run:
                mlflow.log_params(_flatten("", params, {}))
                mlflow.log_metrics(metrics)
                for fold in train.fold_results:
                    mlflow.log_metrics({f"fold_{k}": v for k, v in fold.metrics.items()}, step=fold.fold)
                if calibration.diagram:
                    mlflow.log_artifact(str(calibration.diagram), "calibration")
                mlflow.log_artifact(str(exported.path / "metadata.json"), "export")
                golden = exported.metadata.golden_examples[: len(input_example)]
                signature = infer_signature(input_example, np.asarray([g.probability for g in golden]))
                with warnings.catch_warnings():
                    # The signature is built from typed example rows on purpose (see input_example).
                    warnings.simplefilter("ignore", UserWarning)
                    info = mlflow.pyfunc.log_model(
                        name="model", python_model=str(PYFUNC_FILE), artifacts={"model": str(exported.path)},
                        code_paths=[str(SERVING_DIR)], signature=signature, input_example=input_example,
                        pip_requirements=serving_requirements(), registered_model_name=self.name,
                    )
                version = str(info.registered_model_version)
                tags = {"release": metadata.release, "export_version": metadata.version,
                        "model_dir": str(exported.path), "schema_hash": metadata.schema_hash,
                        "feature_schema_hash": metadata.feature_schema_hash, "model_digest": metadata.model_digest,
                        "data_sha256": metadata.lineage.get("data_sha256", ""),
                        "cv_metrics": json.dumps(metadata.cv_metrics), "mlflow_run_id": run.info.run_id,
                        "calibrator_method": metadata.calibrator_method, **extra_tags}
                for key, value in tags.items():
                    self.client.set_model_version_tag(self.name, version, key, value)
                mlflow.set_tags({"release": metadata.release, "registered_version": version,
                                 "export_version": metadata.version})
        except RegistryError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("mlflow"):
                raise RegistryError(f"MLflow at {self._where()}: registering '{self.name}' failed: {exc}") from exc
            raise
        return RegisteredVersion(self.name, version, run.info.run_id, info.model_uri)

    def record_gate(self, version: str, gate) -> None:
        """Tag the verdict on the version; a blessed version becomes the challenger."""
        self.client.set_model_version_tag(self.name, version, "blessed", str(gate.passed).lower())
        self.client.set_model_version_tag(self.name, version, "gate_reasons", json.dumps(gate.reasons))
        if gate.champion_version:
            self.client.set_model_version_tag(self.name, version, "gate_champion_version", gate.champion_version)
        if gate.passed:
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, version)

    # ------------------------------------------------------------ release side
    def get_version(self, version: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException:
            raise RegistryError(f"MLflow at {self._where()}: '{self.name}' has no version {version}") from None

    def resolve(self, version: str | None):
        """The version to deploy: the one named, else the challenger, else the latest blessed one."""
        if version is not None:
            return self.get_version(version)
        challenger = self.alias_version(CHALLENGER)
        if challenger is not None:
            return challenger
        return self.latest_blessed()

    def latest_blessed(self):
        """The newest version that passed the quality gate and was never rolled back from (the default
        candidate for a promotion or deploy; a version that failed in production is offered again only
        when named)."""
        blessed = [v for v in self._versions() if v.tags.get("blessed") == "true" and not v.tags.get(ROLLED_BACK)]
        if not blessed:
            raise RegistryError(f"'{self.name}' has no version that passed the quality gate and was never "
                                "rolled back from; name one with --version")
        return max(blessed, key=lambda v: int(v.version))

    @staticmethod
    def _local_export(mv) -> Path | None:
        """The version's export directory if it is on this machine (the worker that trained it)."""
        model_dir = mv.tags.get("model_dir")
        return Path(model_dir) if model_dir and (Path(model_dir) / "metadata.json").exists() else None

    def export_dir(self, mv, cache_dir: Path) -> Path:
        """A version's export directory on this machine: where it was exported if that is here (the
        worker that trained it), else downloaded from the registry into ``cache_dir`` (a worker on
        another machine). Every file is checked against metadata.json's SHA-256 before it is used."""
        from serving.errors import IntegrityError as ServingIntegrityError
        from serving.metadata import read_metadata, verify_files

        local = self._local_export(mv)
        if local is not None:
            return local
        dest = Path(cache_dir) / self.name / f"registry-{mv.version}"
        found = sorted(dest.glob("artifacts/*/metadata.json")) if dest.exists() else []
        if not found:
            import shutil
            import tempfile

            import mlflow

            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".registry-{mv.version}-", dir=dest.parent))
            try:
                with tracking_uri(self.settings.tracking_uri):
                    mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.name}/{mv.version}",
                                                        dst_path=str(staging))
            except Exception as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise RegistryError(f"MLflow at {self._where()}: version {mv.version} of '{self.name}': its export "
                                    f"is not on this machine ({mv.tags.get('model_dir')}) and could not be downloaded: "
                                    f"{exc}") from None
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
            found = sorted(dest.glob("artifacts/*/metadata.json"))
        if len(found) != 1:
            raise RegistryError(f"MLflow at {self._where()}: version {mv.version} of '{self.name}': the registered "
                                f"model holds {len(found)} exports under artifacts/ (expected one)")
        export = found[0].parent
        try:
            verify_files(export, read_metadata(export))
        except ServingIntegrityError as exc:
            raise IntegrityError(f"version {mv.version} of '{self.name}' from the registry: {exc}; nothing was "
                                 f"deployed (if the registry's copy is sound, delete {dest} to fetch it again)"
                                 ) from None
        log.info("version %s of %s: export taken from the registry into %s", mv.version, self.name, export)
        return export

    def metadata_of(self, mv):
        """A version's metadata.json: from its export directory, else from its MLflow run (another machine)."""
        from serving.metadata import read_metadata

        local = self._local_export(mv)
        if local is not None:
            return read_metadata(local)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            try:
                self.client.download_artifacts(mv.run_id, "export/metadata.json", tmp)
            except Exception as exc:
                raise RegistryError(f"MLflow at {self._where()}: version {mv.version} of '{self.name}': no "
                                    f"metadata.json at {mv.tags.get('model_dir')} nor in run {mv.run_id}: {exc}"
                                    ) from None
            return read_metadata(Path(tmp) / "export")

    def run_link(self, run_id: str) -> str:
        """Where a person finds the run: a URL for a tracking server, else the store and run id;
        never with credentials (this text goes into artifacts every UI user can read)."""
        uri = safe_uri(self.settings.tracking_uri)
        if not run_id:
            return "-"
        if uri.startswith(("http://", "https://")):
            experiment = self.client.get_run(run_id).info.experiment_id
            return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
        return f"run {run_id} in {uri} (`mlflow ui --backend-store-uri {uri}`)"

    def log_bundle(self, version: str, bundle) -> None:
        mv = self.get_version(version)
        if mv.run_id:
            self.client.log_artifact(mv.run_id, str(bundle.path), "bundle")
        self.client.set_model_version_tag(self.name, str(version), "bundle_sha256", bundle.sha256)

    def _audit(self, version: str, prefix: str, reason: str, run_id: str | None) -> None:
        import getpass
        from datetime import UTC, datetime

        tags = {f"{prefix}_at": datetime.now(UTC).isoformat(timespec="seconds"), f"{prefix}_by": getpass.getuser(),
                f"{prefix}_run": run_id or "", f"{prefix}_reason": reason}
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

    def promote(self, version: str, reason: str, run_id: str | None, approval: dict | None = None) -> dict:
        """Move ``champion`` to ``version``; the version records who, when, why and the previous champion,
        and, for an approved promotion, the approver and their reason."""
        before = self.alias_version(CHAMPION)
        previous = str(before.version) if before is not None else None
        if previous != str(version):
            self.client.set_model_version_tag(self.name, str(version), "previous_champion", previous or "")
        self._audit(version, "promoted", reason, run_id)
        for key, value in (approval or {}).items():
            self.client.set_model_version_tag(self.name, str(version), f"approval_{key}", str(value))
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        challenger = self.alias_version(CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version):
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        return {"champion_before": previous, "champion_after": str(version)}

    def rollback_version(self, to_version: str | None, expected_champion: str | None = None) -> tuple[str, str]:
        """(current champion, the version to roll back to): the recorded previous champion unless named.
        With ``expected_champion``, refuse unless the champion still is that version."""
        current = self.alias_version(CHAMPION)
        if current is None:
            raise RegistryError(f"'{self.name}' has no champion to roll back from")
        if expected_champion is not None and str(current.version) != str(expected_champion):
            raise RegistryError(f"'{self.name}': the champion is version {current.version}, no longer "
                                f"{expected_champion}; not rolling back")
        target = to_version or current.tags.get("previous_champion")
        if not target:
            raise RegistryError(f"champion version {current.version} records no previous champion; "
                                "name one with --to-version")
        self.get_version(target)
        return str(current.version), str(target)

    def record_rollback(self, from_version: str, to_version: str, reason: str, run_id: str | None) -> dict:
        self._audit(to_version, "rolled_back_to", reason, run_id)
        self.client.set_model_version_tag(self.name, from_version, ROLLED_BACK, to_version)
        self.client.set_registered_model_alias(self.name, CHAMPION, to_version)
        return {"champion_before": from_version, "champion_after": to_version}


# ---------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


# No retries: a half-finished registration retried would register the model twice.
@task(name="register", cache_policy=NO_CACHE)
def register_task(registry: MlflowRegistry, exported, calibration, train, input_example, params: dict,
                  extra_tags: dict[str, str]) -> RegisteredVersion:
    from prefect import get_run_logger

    reg = registry.log_and_register(exported=exported, calibration=calibration, train=train,
                                    input_example=input_example, params=params, extra_tags=extra_tags)
    get_run_logger().info("registered %s version %s (run %s)", reg.name, reg.version, reg.run_id)
    return reg
