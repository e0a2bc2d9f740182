"""``metadata.json``: what an exported model version is, and the manifest of its files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serving.contract.constants import MANIFEST, MODEL_TYPE
from serving.contract.digest import sha256_file
from serving.contract.errors import ContractError, IntegrityError
from serving.contract.schema import FeatureList, canonical_digest, feature_schema_hash, schema_from_dict

METADATA_FILE = "metadata.json"

CALIBRATOR_FILE = "calibrator.pkl"
SAVED_MODEL_DIR = "saved_model"
SERVING_SIGNATURE = "serving_default"
PACKED_SIGNATURE = "serve_packed"


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    type: str    # the schema type: numeric, integer, boolean, categorical
    dtype: str   # the tensor dtype the SavedModel takes: float64 or string


class GoldenExample(BaseModel):
    model_config = ConfigDict(frozen=True)
    features: dict[str, float | int | str | bool | None]
    raw_score: float
    probability: float


class ModelMetadata(BaseModel):
    """Everything a server, a monitor or an auditor needs to know about one version."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: str
    release: str
    model_name: str
    model_type: str = MODEL_TYPE
    calibrator_method: str
    training_date: str
    cv_metrics: dict[str, float]
    calibration: dict = Field(default_factory=dict)
    schema_: dict = Field(alias="schema")
    schema_hash: str
    feature_schema_hash: str
    feature_list: list[dict]
    inputs: list[InputSpec]
    files: dict[str, str]
    model_digest: str
    golden_examples: list[GoldenExample]
    reference: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    lineage: dict = Field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=False)


def hash_tree(root: str | Path) -> dict[str, str]:
    """SHA-256 of every file below ``root`` except metadata.json, keyed by POSIX relative path."""
    root = Path(root)
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel != METADATA_FILE:
                out[rel] = sha256_file(path)
    return dict(sorted(out.items()))


def saved_model_digest(files: dict[str, str]) -> str:
    """One digest for the SavedModel's files; the calibrator records it to prove they belong together."""
    return canonical_digest({k: v for k, v in files.items() if k.startswith(SAVED_MODEL_DIR + "/")})


def read_metadata(version_dir: str | Path) -> ModelMetadata:
    path = Path(version_dir) / METADATA_FILE
    try:
        return ModelMetadata.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing; not an exported model version") from None
    except ValueError as exc:
        raise IntegrityError(f"{path}: not valid model metadata: {exc}") from None


def verify_files(version_dir: str | Path, metadata: ModelMetadata) -> None:
    """Raise IntegrityError naming every file that is missing, extra or changed."""
    actual = hash_tree(version_dir)
    expected = metadata.files
    problems = []
    for rel in sorted(set(expected) - set(actual)):
        problems.append(f"missing {rel}")
    for rel in sorted(set(actual) - set(expected)):
        problems.append(f"unexpected {rel}")
    for rel in sorted(set(expected) & set(actual)):
        if expected[rel] != actual[rel]:
            problems.append(f"{rel} has SHA-256 {actual[rel][:12]}…, manifest says {expected[rel][:12]}…")
    if problems:
        raise IntegrityError(f"{version_dir}: files do not match metadata.json: " + "; ".join(problems))
    if saved_model_digest(actual) != metadata.model_digest:
        raise IntegrityError(f"{version_dir}: SavedModel digest does not match metadata.json")


def _manifest_entry(version_dir: Path) -> tuple[Path, str, str | None] | None:
    """The release bundle MANIFEST above an unpacked version (releases/<v>/model/<name>/<v>/), if any:
    (manifest path, this metadata.json's path in it, the SHA-256 it records or None)."""
    for parent in version_dir.parents[:3]:
        manifest = parent / MANIFEST
        if manifest.is_file():
            rel = (version_dir / METADATA_FILE).relative_to(parent).as_posix()
            for line in manifest.read_text(errors="replace").splitlines():
                digest, _, name = line.partition("  ")
                if name == rel:
                    return manifest, rel, digest
            return manifest, rel, None
    return None


def verify_metadata(version_dir: str | Path, metadata: ModelMetadata, expected_sha256: str | None = None) -> str:
    """Raise IntegrityError unless metadata.json is the one recorded at registration and agrees with itself.

    metadata.json lists every other file's hash, so it is the anchor: its own SHA-256 is checked
    against ``expected_sha256`` (the registry's ``metadata_sha256`` tag, passed by the deploy) and
    against the release bundle's MANIFEST when the version was unpacked from one; the schema and
    the model's input contract must match the hashes recorded beside them.

    Returns:
        metadata.json's SHA-256, as checked.
    """
    version_dir = Path(version_dir)
    path = version_dir / METADATA_FILE
    actual = sha256_file(path)
    if expected_sha256 is not None and actual != expected_sha256:
        raise IntegrityError(f"{path}: SHA-256 {actual[:12]}…, the registry recorded {expected_sha256[:12]}… "
                             "(edited after registration)")
    entry = _manifest_entry(version_dir)
    if entry is not None:
        manifest, rel, recorded = entry
        if recorded is None:
            raise IntegrityError(f"{manifest} does not list {rel}")
        if recorded != actual:
            raise IntegrityError(f"{path}: SHA-256 {actual[:12]}…, {manifest} says {recorded[:12]}… "
                                 "(edited after unpacking)")
    try:
        schema = schema_from_dict(metadata.schema_, str(path))
        features = FeatureList.model_validate({"features": metadata.feature_list})
    except (ContractError, ValueError) as exc:
        raise IntegrityError(f"{path}: schema or feature list unreadable: {exc}") from None
    if schema.digest() != metadata.schema_hash:
        raise IntegrityError(f"{path}: the schema hashes to {schema.digest()[:12]}…, schema_hash says "
                             f"{metadata.schema_hash[:12]}… (the schema was edited)")
    if feature_schema_hash(schema, features) != metadata.feature_schema_hash:
        raise IntegrityError(f"{path}: the model inputs' contract does not match feature_schema_hash")
    if [i.name for i in metadata.inputs] != features.names:
        raise IntegrityError(f"{path}: inputs {[i.name for i in metadata.inputs]} are not the feature list "
                             f"{features.names}")
    return actual
