"""Backup and restore of the pipeline home: one verified ``.tar.gz`` (``python -m flows backup`` / ``restore``).

What goes in (paths relative to the home; docs/how-to/backup-restore.md says why):

    mlflow/mlflow.db            copied through SQLite's online backup API (consistent while a release writes)
    mlflow/artifacts/  models/  bundles/  reports/  monitoring/  last_release.json
    targets/<t>/run/serving-state.json, targets/<t>/current, targets/<t>/releases/   local hosts' desired state

What stays out: locks/, prefect/ (the ephemeral Prefect home), registry-cache/, the hosts' venvs/, incoming/,
bin/ and run/ records (pids, logs, tokens, metrics): held by live processes or rebuilt by the next deploy.

The archive holds ``MANIFEST.json``: every file's SHA-256 and size, every link, the tool's git commit, the
time, the old home's path and the registry's models, versions and aliases. ``restore`` checks all of it
before it writes a byte, restores into a hidden sibling, rewrites the old home's path in the MLflow database
(its artifact locations are absolute ``file://`` URIs) and renames the sibling into place.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from serving.contract.digest import sha256_bytes
from serving.contract.files import replacing
from tasks.errors import ReleaseError
from tasks.lineage import code_lineage

FORMAT = "tabular-pipeline-backup/1"
MANIFEST = "MANIFEST.json"
DATABASE = "mlflow/mlflow.db"
TREES = ("mlflow/artifacts", "models", "bundles", "reports", "monitoring")
FILES = ("last_release.json",)
HOST_PARTS = ("run/serving-state.json", "current", "releases")   # under each targets/<name>/
# Restored files that name the home by its absolute path and that no SHA-256 elsewhere covers: rewritten.
REHOMED = ("last_release.json", "targets/*/run/serving-state.json")
SQLITE_TIMEOUT_S = 60   # how long the online backup waits for a writer's lock


class BackupError(ReleaseError):
    """An archive cannot be written or restored (names the file and what to do); nothing was written."""


@dataclass(frozen=True)
class Archive:
    """What ``backup`` wrote or ``restore`` restored."""

    path: Path
    home: Path
    files: int
    size: int
    seconds: float
    manifest: dict


# ---------------------------------------------------------------- backup

def _database_copy(db: Path, out: Path) -> None:
    """``db`` copied to ``out`` through SQLite's online backup API: a consistent snapshot, even mid-write."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT_S)
    dst = sqlite3.connect(out)
    try:
        with dst:
            src.backup(dst)
    except sqlite3.Error as exc:
        raise BackupError(f"{db}: the SQLite online backup failed ({exc}); is it an MLflow database?") from None
    finally:
        src.close()
        dst.close()


def registry_summary(db: Path) -> dict:
    """The registry in a backed-up MLflow database: model -> its versions, aliases and latest version."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "registered_models" not in tables:
            return {}
        out: dict[str, dict] = {}
        for (name,) in con.execute("SELECT name FROM registered_models ORDER BY name"):
            versions = [str(v) for (v,) in con.execute(
                "SELECT version FROM model_versions WHERE name=? ORDER BY version", (name,))]
            aliases = {}
            if "registered_model_aliases" in tables:
                aliases = {a: str(v) for a, v in con.execute(
                    "SELECT alias, version FROM registered_model_aliases WHERE name=? ORDER BY alias", (name,))}
            out[name] = {"versions": versions, "aliases": aliases}
        return out
    finally:
        con.close()


def _host_members(home: Path) -> list[Path]:
    """The local hosts' desired state under the home: each targets/<t>/'s state file, current link, releases."""
    targets = home / "targets"
    if not targets.is_dir():
        return []
    return [host / part for host in sorted(targets.iterdir()) if host.is_dir() for part in HOST_PARTS
            if (host / part).exists() or (host / part).is_symlink()]


def _walk(root: Path) -> list[Path]:
    """Files and links under ``root`` (a link is not followed), in a stable order; hidden staging skipped."""
    if root.is_symlink() or root.is_file():
        return [root]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".staging-"))
        here = Path(folder)
        found += [here / f for f in sorted(files) if not f.endswith(".part")]
        found += [here / d for d in dirs if (here / d).is_symlink()]
    return found


def home_members(home: Path) -> list[Path]:
    """Every path ``backup`` takes from ``home``, the database excepted (it goes through the backup API)."""
    roots = [home / t for t in TREES] + [home / f for f in FILES] + _host_members(home)
    return [p for root in roots if root.exists() or root.is_symlink() for p in _walk(root)]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> dict:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"path": name, "sha256": sha256_bytes(data), "size": len(data)}


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> dict:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)
    return {"path": name, "target": target}


def _add_member(tar: tarfile.TarFile, home: Path, path: Path, files: list, links: list) -> None:
    name = path.relative_to(home).as_posix()
    if path.is_symlink():
        target = os.readlink(path)
        _safe_link(name, target)     # a restore would refuse it: say so now
        links.append(_add_link(tar, name, target))
        return
    with contextlib.suppress(FileNotFoundError):   # removed by a run since the walk: not state
        files.append(_add(tar, name, path.read_bytes(), path.stat().st_mtime))


def backup(home: Path, out: Path, overwrite: bool = False, now: datetime | None = None) -> Archive:
    """Write one archive of ``home`` to ``out`` atomically (a temporary file renamed into place).

    Raises:
        BackupError: ``home`` holds no pipeline state, or ``out`` exists and ``overwrite`` is off.
    """
    started = time.monotonic()
    home, out = home.resolve(), out.resolve()
    db = home / DATABASE
    if not db.is_file():
        raise BackupError(f"{home} holds no {DATABASE}: not a pipeline home (set PIPELINE_HOME or --config)")
    if out.exists() and not overwrite:
        raise BackupError(f"{out} already exists; pass --overwrite to replace it")
    if out == home or home in out.parents:
        raise BackupError(f"{out} is inside the home {home}; write the archive elsewhere")
    files, links = [], []
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".backup-", dir=out.parent) as tmp, replacing(out) as fh:
            snapshot = Path(tmp) / "mlflow.db"
            _database_copy(db, snapshot)
            with tarfile.open(fileobj=fh, mode="w:gz") as tar:
                files.append(_add(tar, DATABASE, snapshot.read_bytes(), time.time()))
                for path in home_members(home):
                    _add_member(tar, home, path, files, links)
                manifest = {"format": FORMAT, "created": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
                            "home": str(home), "tool": code_lineage(), "registry": registry_summary(snapshot),
                            "files": files, "links": links}
                _add(tar, MANIFEST, json.dumps(manifest, indent=1).encode(), time.time())
    except OSError as exc:
        raise BackupError(f"writing {out} failed ({exc}); nothing was written") from None
    return Archive(out, home, len(files), out.stat().st_size, time.monotonic() - started, manifest)


# ---------------------------------------------------------------- verify

def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name.startswith("/"):
        raise BackupError(f"archive member {name!r} would land outside the home; refused, nothing written")
    return path


def _safe_link(name: str, target: str) -> None:
    joined = PurePosixPath(name).parent / target
    if PurePosixPath(target).is_absolute() or ".." in PurePosixPath(os.path.normpath(joined)).parts:
        raise BackupError(f"archive link {name!r} -> {target!r} points outside the home; refused, nothing written")


def _open(archive: Path) -> tarfile.TarFile:
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    try:
        return tarfile.open(archive, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive}: not a backup archive (a .tar.gz written by `backup`): {exc}") from None


def _manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    try:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
    except (KeyError, AttributeError, ValueError, tarfile.TarError, OSError, EOFError):
        raise BackupError(f"{archive}: no readable {MANIFEST}; not a backup archive written by `backup`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BackupError(f"{archive}: format {found!r}, expected {FORMAT!r}")
    return manifest


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path | None) -> tuple[str, int]:
    """A file member's SHA-256 and size, read in blocks (and written under ``into`` when given)."""
    src, digest, size = tar.extractfile(member), hashlib.sha256(), 0
    with contextlib.ExitStack() as stack:
        out = None
        if into is not None:
            (into / member.name).parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(into / member.name, "wb"))
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            if out is not None:
                out.write(block)
    return digest.hexdigest(), size


def verify(archive: Path, into: Path | None = None) -> tuple[dict, dict[str, str]]:
    """Check every member of ``archive`` against its manifest in one pass (writing the files under ``into``
    when given); returns the manifest and the links (name -> target).

    Raises:
        BackupError: missing or corrupt archive, a member outside the home, a file the manifest does not
            list or lists with another SHA-256 or size (named), a file missing; writing under ``into`` failed.
    """
    with _open(archive) as tar:
        manifest = _manifest(tar, archive)
        expected = {f["path"]: f for f in manifest.get("files", [])}
        links = {entry["path"]: entry["target"] for entry in manifest.get("links", [])}
        found: dict[str, tuple[str, int]] = {}
        try:
            for member in tar.getmembers():
                _check_member(member, expected, links)
                if member.isfile() and member.name != MANIFEST:
                    found[member.name] = _copy_member(tar, member, into)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise BackupError(f"{archive}: corrupt archive ({exc})") from None
        except OSError as exc:
            what = f"writing into {into} failed" if into is not None else "corrupt archive"
            raise BackupError(f"{archive}: {what} ({exc})") from None
    for name, entry in expected.items():
        if name not in found:
            raise BackupError(f"{archive}: {name} is listed in the manifest but missing from the archive")
        if found[name] != (entry["sha256"], entry["size"]):
            raise BackupError(f"{archive}: {name} does not match its SHA-256 in the manifest; the archive is "
                              "damaged, restore from another copy")
    return manifest, links


def _check_member(member: tarfile.TarInfo, expected: dict, links: dict) -> None:
    _safe_name(member.name)
    if member.name == MANIFEST:
        return
    if member.issym():
        if links.get(member.name) != member.linkname:
            raise BackupError(f"archive link {member.name!r} is not the one the manifest lists; refused")
        _safe_link(member.name, member.linkname)
    elif not member.isfile():
        raise BackupError(f"archive member {member.name!r} is not a file or a link; refused, nothing written")
    elif member.name not in expected:
        raise BackupError(f"archive member {member.name!r} is not in the manifest; refused, nothing written")


# ---------------------------------------------------------------- restore

def live_home(home: Path) -> str | None:
    """Why ``home`` must not be overwritten without ``--force`` (it holds a database, or anything), else None."""
    if (home / DATABASE).exists():
        return f"{home} is a live pipeline home (it holds {DATABASE})"
    if home.is_dir() and any(home.iterdir()):
        return f"{home} is not empty"
    if home.exists() and not home.is_dir():
        return f"{home} is a file"
    return None


def rehome_database(db: Path, old: Path, new: Path) -> int:
    """Rewrite the old home's path (as a ``file://`` URI and as a path) to the new one in every text column
    of the MLflow database (artifact locations, sources, tags); returns the cells changed."""
    pairs = [(old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")]
    con = sqlite3.connect(db)
    changed = 0
    try:
        with con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                                "AND name NOT LIKE 'sqlite_%'")]
            for table in tables:
                columns = [c[1] for c in con.execute(f'PRAGMA table_info("{table}")')
                           if c[2].upper().startswith(("VARCHAR", "TEXT", "CHAR"))]
                for column, (before, after) in ((c, p) for c in columns for p in pairs):
                    cur = con.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                                      f'WHERE instr("{column}", ?) > 0', (before, after, before))
                    changed += cur.rowcount
    finally:
        con.close()
    return changed


def rehome_files(root: Path, names, old: Path, new: Path) -> int:
    """Rewrite the old home's path to the new one in the restored files ``REHOMED`` matches (JSON text)."""
    before, after = (json.dumps(f"{home}/")[1:-1] for home in (old, new))
    changed = 0
    for name in names:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in REHOMED):
            text = (root / name).read_text()
            if before in text:
                (root / name).write_text(text.replace(before, after))
                changed += 1
    return changed


def restore(archive: Path, home: Path, force: bool = False) -> Archive:
    """Verify ``archive`` completely, then restore it as ``home`` (built beside it, renamed into place).

    Raises:
        BackupError: the archive fails a check (see ``verify``), or ``home`` is live and ``force`` off.
    """
    started = time.monotonic()
    archive, home = archive.resolve(), home.resolve()
    verify(archive)                                   # the whole archive, before anything is written
    reason = live_home(home)
    if reason and not force:
        raise BackupError(f"{reason}; restore into a new directory, or pass --force to replace it")
    home.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{home.name}.restoring-", dir=home.parent))
    try:
        manifest, links = verify(archive, into=building)   # checked again as it is written
        for name, target in links.items():
            (building / name).parent.mkdir(parents=True, exist_ok=True)
            (building / name).symlink_to(target)
        old, names = Path(manifest["home"]), [f["path"] for f in manifest["files"]]
        rewritten = rehome_database(building / DATABASE, old, home) + rehome_files(building, names, old, home)
        _swap(building, home)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise BackupError(f"restoring {archive} into {home} failed ({exc}); nothing was changed") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    manifest = {**manifest, "rewritten_cells": rewritten}
    return Archive(archive, home, len(names), archive.stat().st_size, time.monotonic() - started, manifest)


def _swap(building: Path, home: Path) -> None:
    """Rename the restored tree into place; a replaced home (``--force``) is removed only after."""
    old = None
    if home.exists() or home.is_symlink():
        old = home.with_name(f".{home.name}.replaced-{os.getpid()}")
        os.rename(home, old)
    os.rename(building, home)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
