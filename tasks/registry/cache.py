"""A registered version's export on this machine: where it was exported, or downloaded into a cache.

A worker that did not train a version takes its export from the registry (the registered model's
artifacts) into ``$PIPELINE_HOME/registry-cache/`` and checks every file against metadata.json's
SHA-256 before anything uses it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from serving.contract.errors import IntegrityError
from serving.contract.metadata import ModelMetadata, read_metadata, verify_files, verify_metadata
from tasks.errors import ArtifactIntegrityError, RegistryError
from tasks.registry.links import redact, safe_uri, tracking_uri
from tasks.settings import Settings

log = logging.getLogger(__name__)


def local_export(mv) -> Path | None:
    """The version's export directory if it is on this machine (the worker that trained it)."""
    model_dir = mv.tags.get("model_dir")
    return Path(model_dir) if model_dir and (Path(model_dir) / "metadata.json").exists() else None


def export_dir(settings: Settings, mv, cache_dir: Path) -> Path:
    """A version's export directory on this machine: where it was exported if that is here, else
    downloaded from the registry into ``cache_dir``.

    Raises:
        RegistryError: not here and not downloadable, or the registered model is malformed.
        ArtifactIntegrityError: the downloaded files do not match metadata.json (nothing was deployed).
    """
    name, where = settings.model_name, safe_uri(settings.tracking_uri)
    status = mv.tags.get("release_status")
    if status in ("reserved", "failed"):
        why = f" ({mv.tags.get('release_error')})" if mv.tags.get("release_error") else ""
        raise RegistryError(f"MLflow at {where}: version {mv.version} of '{name}' was reserved by a release that "
                            f"{'failed' if status == 'failed' else 'has not finished'}{why}; it has no model to "
                            "deploy")
    local = local_export(mv)
    if local is not None:
        _check_export(settings, mv, local, "its export")
        return local
    dest = Path(cache_dir) / name / f"registry-{mv.version}"
    found = sorted(dest.glob("artifacts/*/metadata.json")) if dest.exists() else []
    if not found:
        import mlflow

        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".registry-{mv.version}-", dir=dest.parent))
        try:
            with tracking_uri(settings.tracking_uri):
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}",
                                                    dst_path=str(staging))
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RegistryError(f"MLflow at {where}: version {mv.version} of '{name}': its export is not on this "
                                f"machine ({mv.tags.get('model_dir')}) and could not be downloaded: "
                                f"{redact(str(exc))}") from None
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        found = sorted(dest.glob("artifacts/*/metadata.json"))
    if len(found) != 1:
        raise RegistryError(f"MLflow at {where}: version {mv.version} of '{name}': the registered model holds "
                            f"{len(found)} exports under artifacts/ (expected one)")
    export = found[0].parent
    _check_export(settings, mv, export, "the registry's copy",
                  f" (if the registry's copy is sound, delete {dest} to fetch it again)")
    log.info("version %s of %s: export taken from the registry into %s", mv.version, name, export)
    return export


def _check_export(settings: Settings, mv, export: Path, what: str, hint: str = "") -> None:
    """metadata.json must be the one registered (the version's ``metadata_sha256`` tag), agree with its own
    schema hashes, and list every file's SHA-256 correctly."""
    try:
        metadata = read_metadata(export)
        verify_metadata(export, metadata, mv.tags.get("metadata_sha256"))
        verify_files(export, metadata)
    except IntegrityError as exc:
        raise ArtifactIntegrityError(f"version {mv.version} of '{settings.model_name}', {what}: {exc}; nothing "
                                     f"was deployed{hint}") from None


def metadata_of(client, settings: Settings, mv) -> ModelMetadata:
    """A version's metadata.json: from its export directory, else from its MLflow run (another machine)."""
    local = local_export(mv)
    if local is not None:
        return read_metadata(local)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            client.download_artifacts(mv.run_id, "export/metadata.json", tmp)
        except Exception as exc:
            raise RegistryError(f"MLflow at {safe_uri(settings.tracking_uri)}: version {mv.version} of "
                                f"'{settings.model_name}': no metadata.json at {mv.tags.get('model_dir')} nor in "
                                f"run {mv.run_id}: {redact(str(exc))}") from None
        return read_metadata(Path(tmp) / "export")
