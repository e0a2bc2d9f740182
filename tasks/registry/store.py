"""The registry seam: one MLflow registered model, its versions, aliases and audit tags.

``MlflowRegistry`` is what the flows talk to (tests use a real SQLite store). Aliases, never
stages: ``challenger`` marks a blessed version, ``champion`` the one in production; promotions
and rollbacks record who, when, why and from what on the version's tags, so no version number
has to be remembered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.contract.metadata import ModelMetadata
from tasks.constants import CHALLENGER, CHAMPION, ROLLED_BACK
from tasks.errors import RegistryError
from tasks.locks import held_file
from tasks.registry import cache, runs
from tasks.registry.links import bound_http_retries, redact, run_link, safe_uri
from tasks.registry.runs import RegisteredVersion, Reservation
from tasks.settings import Settings

log = logging.getLogger(__name__)

# The registered model's tag naming the pipeline config its last release used (an absolute path).
PIPELINE_CONFIG_TAG = "pipeline_config"


def _is_mlflow_failure(exc: BaseException) -> bool:
    """An error from MLflow or the layers under it (its REST client, its SQL store)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) or \
        type(exc).__module__.split(".")[0] in ("mlflow", "sqlalchemy", "requests", "urllib3")


def _not_there(exc: BaseException) -> bool:
    """MLflow's answer for a name that is not set (an alias, a version, the model itself), as opposed
    to a registry that failed to answer (network, authentication, server error).

    A missing alias is INVALID_PARAMETER_VALUE "Registered model alias … not found." (SQL store and
    tracking server alike, MLflow 3.17); a missing model or version is RESOURCE_DOES_NOT_EXIST.
    """
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc))


def _release_key(release: str) -> tuple[int, ...]:
    """MAJOR.MINOR.PATCH as numbers, for ordering; anything else sorts first."""
    parts = release.split(".")
    return tuple(int(p) for p in parts) if len(parts) == 3 and all(p.isdigit() for p in parts) else (-1,)


@dataclass(frozen=True)
class PriorRelease:
    """The latest registered version's release number and feature-schema hash (for the next release)."""

    release: str
    feature_schema_hash: str


@dataclass(frozen=True)
class Champion:
    version: str
    release: str | None
    metrics: dict[str, float]


class MlflowRegistry:
    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.name = settings.model_name
        uri = settings.tracking_uri
        if not uri.startswith("sqlite:///"):
            if uri.startswith(("http://", "https://")):
                bound_http_retries()
            with self._step("connecting"):   # a database store connects here
                self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            return
        # MLflow creates and migrates a new SQLite store's schema when a client first opens it; two
        # processes doing that at once (releases started together on a fresh pipeline home) break each
        # other's migration, so the first opening happens under a lock beside the database.
        db = Path(uri.removeprefix("sqlite:///"))
        with held_file(db.with_name(f".{db.name}.lock"), f"opening the MLflow store {db}",
                       settings.lock_timeout_s), self._step("opening the store"):
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            self.client.search_experiments(max_results=1)           # the tracking store's tables
            self.client.search_registered_models(max_results=1)     # the registry's

    # ------------------------------------------------------------ errors
    def _where(self) -> str:
        return safe_uri(self.settings.tracking_uri)

    def _failed(self, step: str, exc: BaseException) -> RegistryError:
        """The registry did not answer ``step``: say where (no credentials) and what, never "not there"."""
        return RegistryError(f"MLflow at {self._where()}: {step} of '{self.name}' failed; the registry did not "
                             f"answer, so nothing was decided from it (check that it is reachable and the "
                             f"credentials, then run again): {redact(str(exc))}")

    @contextmanager
    def _step(self, step: str):
        """Turn MLflow's failures during ``step`` into a ``RegistryError`` naming the registry and the step."""
        try:
            yield
        except Exception as exc:
            if _is_mlflow_failure(exc):
                raise self._failed(step, exc) from None
            raise

    # ------------------------------------------------------------ queries
    def _versions(self):
        with self._step("listing the versions"):
            return self.client.search_model_versions(f"name = '{self.name}'")

    def run_link(self, run_id: str) -> str:
        return run_link(self.client, self.settings.tracking_uri, run_id)

    def alias_version(self, alias: str):
        """The version ``alias`` points at; None only when MLflow answers that the alias is not set.

        Raises:
            RegistryError: the registry did not answer (unreachable, refused): not the same as no alias.
        """
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except Exception as exc:
            if not _is_mlflow_failure(exc):
                raise
            if _not_there(exc):
                return None
            raise self._failed(f"reading alias '{alias}'", exc) from None

    def champion_after_failure(self, before: str | None) -> str:
        """What became of the champion when a deploy failed (it was ``before``), as read again: never raises."""
        try:
            now = self.alias_version(CHAMPION)
        except RegistryError as exc:
            return f"the champion could not be read again (it was {before or 'none'}): {exc}"
        now = str(now.version) if now is not None else None
        if now == before:
            return f"champion unchanged ({before or 'none'})"
        return f"the champion MOVED from {before or 'none'} to {now or 'none'}"

    def champion(self) -> Champion | None:
        mv = self.alias_version(CHAMPION)
        if mv is None:
            return None
        metrics = json.loads(mv.tags.get("cv_metrics", "{}"))
        if not metrics and mv.run_id:
            with self._step(f"reading the run of champion version {mv.version}"):
                run_metrics = self.client.get_run(mv.run_id).data.metrics
            metrics = {k.removeprefix("cv_"): v for k, v in run_metrics.items() if k.startswith("cv_")}
        return Champion(version=str(mv.version), release=mv.tags.get("release"), metrics=metrics)

    # ------------------------------------------------------------ writes
    def record_gate(self, version: str, gate, evaluation=None) -> None:
        """Tag the verdict on the version, with the comparison it rests on and, when there were evaluation
        rows, the shipped pair's metrics on them; a blessed version becomes the challenger."""
        with self._step(f"recording the gate verdict on version {version}"):
            self._record_gate(version, gate, evaluation)

    def _record_gate(self, version: str, gate, evaluation=None) -> None:
        self.client.set_model_version_tag(self.name, version, "blessed", str(gate.passed).lower())
        self.client.set_model_version_tag(self.name, version, "gate_reasons", json.dumps(gate.reasons))
        self.client.set_model_version_tag(self.name, version, "gate_notes", json.dumps(gate.notes))
        self.client.set_model_version_tag(self.name, version, "gate_comparison", json.dumps(gate.comparison))
        if evaluation is not None:
            self.client.set_model_version_tag(self.name, version, "eval_metrics", json.dumps(evaluation.candidate))
            self.client.set_model_version_tag(self.name, version, "eval_rows", json.dumps(evaluation.rows.to_dict()))
        if gate.champion_version:
            self.client.set_model_version_tag(self.name, version, "gate_champion_version", gate.champion_version)
        if gate.passed:
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)

    # ------------------------------------------------------------ registering and exports
    def reserve(self, feature_schema_hash: str,
                release_of: Callable[[PriorRelease | None, list[str]], str]) -> Reservation:
        """The next version and its release number (``release_of(prior release, every release given)``), taken
        together, from one listing of the versions.

        Call it holding the model's release lock (``tasks.locks``): the release number is read from the
        versions before this one, so another run's reservation must not come in between.
        """
        versions = self._versions()
        prior = _prior_release(versions)
        release = release_of(prior, _releases(versions))
        with self._step("reserving a new version"):
            return runs.reserve(self.client, self.settings, release, {
                "feature_schema_hash": feature_schema_hash, "previous_release": prior.release if prior else ""})

    def abandon(self, reservation: Reservation, stage: str, error: BaseException) -> None:
        """Mark a reserved version whose release failed at ``stage`` (best effort: the flow raises ``error``)."""
        try:
            with self._step(f"marking version {reservation.version} failed"):
                runs.abandon(self.client, reservation, f"{stage}: {type(error).__name__}: {redact(str(error))}")
        except RegistryError as exc:
            log.error("%s", exc)

    def log_and_register(self, reservation: Reservation, *, exported, calibration, train, input_example,
                         params: dict, extra_tags: dict[str, str]) -> RegisteredVersion:
        """The run's record and the model, into the reserved version (``runs.log_and_register``)."""
        return runs.log_and_register(self.client, self.settings, reservation, exported=exported,
                                     calibration=calibration, train=train, input_example=input_example,
                                     params=params, extra_tags=extra_tags)

    def register_recalibrated(self, reservation: Reservation, *, exported, input_example, params: dict,
                              metrics: dict[str, float], artifacts: list[tuple[Path, str]],
                              extra_tags: dict[str, str]) -> RegisteredVersion:
        """A recalibrated export (a PATCH release) into the reserved version, with the release's conventions
        (``runs.register_export``): no training run of its own, its metrics are the recalibration's."""
        return runs.register_export(self.client, self.settings, reservation, exported=exported,
                                    input_example=input_example, params=params, metrics=metrics, steps=[],
                                    artifacts=artifacts, extra_tags=extra_tags)

    def export_dir(self, mv, cache_dir: Path) -> Path:
        """The version's export on this machine, SHA-256 checked (``cache.export_dir``)."""
        return cache.export_dir(self.settings, mv, cache_dir)

    def metadata_of(self, mv) -> ModelMetadata:
        """The version's metadata.json, from here or from its MLflow run (``cache.metadata_of``)."""
        return cache.metadata_of(self.client, self.settings, mv)

    # ------------------------------------------------------------ models
    def registered_models(self) -> dict[str, dict[str, str]]:
        """Every registered model of this registry (not only ``self.name``), with its tags."""
        found: dict[str, dict[str, str]] = {}
        token = None
        with self._step("listing the registered models"):
            while True:
                page = self.client.search_registered_models(max_results=1000, page_token=token)
                found |= {m.name: dict(m.tags or {}) for m in page}
                token = page.token
                if not token:
                    return found

    def record_config(self, path: Path) -> None:
        """Record the pipeline config a release used on the registered model (``PIPELINE_CONFIG_TAG``), so a
        later command that names only the model reads the same settings."""
        with self._step("recording the pipeline config"):
            self.client.set_registered_model_tag(self.name, PIPELINE_CONFIG_TAG, str(path))

    # ------------------------------------------------------------ versions
    def get_version(self, version: str):
        """Raises RegistryError: no such version (naming the versions there are), or the registry did not
        answer (said apart)."""
        try:
            return self.client.get_model_version(self.name, str(version))
        except Exception as exc:
            if not _is_mlflow_failure(exc):
                raise
            if _not_there(exc) or getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE":  # or not a number
                raise RegistryError(f"MLflow at {self._where()}: '{self.name}' has no version {version}; "
                                    f"{self._version_list()}") from None
            raise self._failed(f"reading version {version}", exc) from None

    def _version_list(self, shown: int = 20) -> str:
        """The versions there are, for an error message: "its versions: 1, 2, 3"."""
        numbers = sorted(int(v.version) for v in self._versions())
        if not numbers:
            return "it has no versions yet"
        listed = ", ".join(str(n) for n in numbers[-shown:])
        return f"its versions: {listed}" if len(numbers) <= shown else \
            f"its versions: {len(numbers)} in all, the latest {listed}"

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

    def log_bundle(self, version: str, bundle) -> None:
        mv = self.get_version(version)
        with self._step(f"recording the bundle of version {version}"):
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
        with self._step(f"promoting version {version}"):
            self._promote(version, previous, reason, run_id, approval)
        return {"champion_before": previous, "champion_after": str(version)}

    def _promote(self, version: str, previous: str | None, reason: str, run_id: str | None,
                 approval: dict | None) -> None:
        if previous != str(version):
            self.client.set_model_version_tag(self.name, str(version), "previous_champion", previous or "")
        self._audit(version, "promoted", reason, run_id)
        for key, value in (approval or {}).items():
            self.client.set_model_version_tag(self.name, str(version), f"approval_{key}", str(value))
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        challenger = self.alias_version(CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version):
            self.client.delete_registered_model_alias(self.name, CHALLENGER)

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
                                "name one with --version")
        self.get_version(target)
        return str(current.version), str(target)

    def record_rollback(self, from_version: str, to_version: str, reason: str, run_id: str | None) -> dict:
        with self._step(f"moving the champion back from version {from_version} to {to_version}"):
            self._audit(to_version, "rolled_back_to", reason, run_id)
            self.client.set_model_version_tag(self.name, from_version, ROLLED_BACK, to_version)
            self.client.set_registered_model_alias(self.name, CHAMPION, to_version)
        return {"champion_before": from_version, "champion_after": to_version}


def _prior_release(versions) -> PriorRelease | None:
    """The highest release number given and its feature-schema hash (reserved, registered or failed alike:
    a release number, once taken, is never given again). The highest, not the latest version's: a
    recalibration of an older version (1.1.1 after 1.2.0) is not where the next release counts from."""
    tagged = [v for v in versions if v.tags.get("release") and v.tags.get("feature_schema_hash")]
    if not tagged:
        return None
    latest = max(tagged, key=lambda v: (_release_key(v.tags["release"]), int(v.version)))
    return PriorRelease(latest.tags["release"], latest.tags["feature_schema_hash"])


def _releases(versions) -> list[str]:
    """Every release number the registry has given (failed releases' included)."""
    return [v.tags["release"] for v in versions if v.tags.get("release")]
