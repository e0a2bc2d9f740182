"""Stage 6: package a version as a deterministic release bundle (same inputs → same bytes).

    <name>-<version>.zip            named by the registry version (one model's releases, or two
                                    models' "1.0.0", never share a name)
    ├── model/<name>/<version>/…    the export, unchanged
    ├── configs/schema.yaml, configs/feature_list.csv
    ├── serving/…                   the server's source (what runs on the host)
    ├── requirements.txt            serving/requirements.txt: what the host installs
    ├── constraints.txt             the project's constraints.txt: the pins of all it pulls in
    └── MANIFEST                    "<sha256>  <path>" for every other file, sorted

Entries are sorted, timestamped 1980-01-01 and stored with fixed permissions, so the
bundle's SHA-256 identifies its content.

The host agent ships the same way, as a zipapp of its own (``build_host_agent``):

    host-agent.pyz                  python3 host-agent.pyz COMMAND … (what python -m serving.host runs)
    ├── __main__.py                 runs serving.host.cli
    ├── serving/__init__.py, serving/contract/{__init__,files,constants,digest}.py
    └── serving/host/*.py           the agent: standard library only, like everything here
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serving.contract.digest import sha256_bytes, sha256_file
from serving.contract.files import atomic_write, locked
from serving.contract.metadata import ModelMetadata, read_metadata
from serving.contract.schema import FeatureList, FeatureSpec, schema_from_dict
from tasks.constants import CONSTRAINTS, MANIFEST, SERVING_DIR
from tasks.contract_files import dump_feature_list, dump_schema

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# What of serving/ the host agent needs besides serving/host/ (the import contract host-agent-alone keeps it so).
HOST_AGENT_MODULES = ("__init__.py", "contract/__init__.py", "contract/files.py", "contract/constants.py",
                      "contract/digest.py")
HOST_AGENT_MAIN = b'''"""The host agent as a zipapp: ``python3 host-agent.pyz COMMAND ...`` runs ``serving.host``."""

from serving.host.cli import main

raise SystemExit(main())
'''


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    release: str
    model_name: str
    version: str            # the export version inside
    files: dict[str, str]   # bundle path -> sha256


def _entries(model_dir: Path, model_name: str, version: str, schema: Path, feature_list: Path) -> dict[str, Path]:
    entries: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(model_dir):
        for name in files:
            path = Path(dirpath) / name
            entries[f"model/{model_name}/{version}/{path.relative_to(model_dir).as_posix()}"] = path
    entries["configs/schema.yaml"] = schema
    entries["configs/feature_list.csv"] = feature_list
    for path in sorted(SERVING_DIR.rglob("*.py")) + [SERVING_DIR / "requirements.txt"]:
        entries[f"serving/{path.relative_to(SERVING_DIR).as_posix()}"] = path
    entries["requirements.txt"] = SERVING_DIR / "requirements.txt"
    # pip install -r requirements.txt -c constraints.txt on the host: the whole file, as pins of packages
    # the server does not install are ignored (and a subset computed here could miss a host's platform).
    entries["constraints.txt"] = CONSTRAINTS
    return dict(sorted(entries.items()))


def _deterministic_zip(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """A zip of ``entries`` in the order given, each dated 1980-01-01 with mode 0644: same entries, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=6)
    return buffer.getvalue()


def build_bundle(model_dir: Path, model_name: str, version: str, release: str, schema: Path, feature_list: Path,
                 bundles_dir: Path) -> Bundle:
    """Write ``bundles_dir/<name>-<version>.zip`` atomically; rebuilding the same inputs gives the same bytes."""
    entries = _entries(model_dir, model_name, version, schema, feature_list)
    files = {name: sha256_file(path) for name, path in entries.items()}
    manifest = "".join(f"{digest}  {name}\n" for name, digest in files.items()).encode()
    blob = _deterministic_zip([*((name, path.read_bytes()) for name, path in entries.items()), (MANIFEST, manifest)])
    target = bundles_dir / f"{model_name}-{version}.zip"
    atomic_write(target, blob)
    return Bundle(path=target, sha256=sha256_bytes(blob), release=release, model_name=model_name,
                  version=version, files=files)


def package_version(model_dir: Path, bundles_dir: Path) -> tuple[Bundle, ModelMetadata]:
    """Bundle an exported version; its configs are written from its own metadata (what it was trained on)."""
    metadata = read_metadata(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        schema_path, features_path = Path(tmp) / "schema.yaml", Path(tmp) / "feature_list.csv"
        dump_schema(schema_from_dict(metadata.schema_), schema_path)
        dump_feature_list(FeatureList(features=tuple(FeatureSpec.model_validate(f) for f in metadata.feature_list)),
                          features_path)
        bundle = build_bundle(model_dir, metadata.model_name, metadata.version, metadata.release, schema_path,
                              features_path, bundles_dir)
    return bundle, metadata


def host_agent_sources() -> dict[str, Path]:
    """What the host agent's zipapp holds besides its ``__main__.py``: archive name -> source file, sorted."""
    paths = [SERVING_DIR / name for name in HOST_AGENT_MODULES] + list((SERVING_DIR / "host").glob("*.py"))
    return dict(sorted((f"serving/{p.relative_to(SERVING_DIR).as_posix()}", p) for p in paths))


def host_agent_zip() -> bytes:
    """The host agent as a zipapp's bytes (``python3 host-agent.pyz COMMAND …``): same sources, same bytes."""
    return _zipapp((("__main__.py", HOST_AGENT_MAIN),
                    *((name, path.read_bytes()) for name, path in host_agent_sources().items())))


@functools.lru_cache(maxsize=4)
def _zipapp(entries: tuple[tuple[str, bytes], ...]) -> bytes:
    # Keyed by the sources' content: a host command in a loop zips them once, an edited source zips anew.
    return _deterministic_zip(entries)


def build_host_agent(dest: Path) -> Path:
    """Write the host agent's zipapp to ``dest`` unless the file there already has its SHA-256; returns ``dest``.

    Raises:
        OSError: ``dest`` cannot be written.
    """
    blob = host_agent_zip()
    if dest.exists() and sha256_file(dest) == sha256_bytes(blob):
        return dest
    with locked(dest.with_name(f".{dest.name}.lock")):   # two threads of one process never share a part file
        if not dest.exists() or sha256_file(dest) != sha256_bytes(blob):
            atomic_write(dest, blob)
    return dest
