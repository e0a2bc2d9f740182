"""Bundles on the host: ``fetch`` downloads one into incoming/, ``unpack`` checks it and makes it a release.

A bundle's MANIFEST lists "<sha256>  <path>" for every other entry; nothing is unpacked unless every entry
matches it, none is missing or extra, and none would land outside the release directory.
``fetch`` reads its URL from stdin (``cli``): a presigned URL is a credential, and ``ps`` shows arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

from serving.contract.constants import MANIFEST
from serving.contract.digest import sha256_bytes, sha256_copy
from serving.contract.files import replacing
from serving.host.errors import HostError
from serving.host.layout import STATE_FILE, release_dir, releases, run_dir, server_pid

BLOCK = 1 << 20


def _checked_manifest(zf: zipfile.ZipFile, bundle: Path) -> str:
    """The bundle's MANIFEST text, once every entry has been checked against it.

    Raises:
        HostError: no MANIFEST, an entry that would escape the release, or one that differs from it.
    """
    names = zf.namelist()
    if MANIFEST not in names:
        raise HostError(f"{bundle}: no MANIFEST")
    manifest_text = zf.read(MANIFEST).decode()
    manifest = dict(reversed(line.split("  ", 1)) for line in manifest_text.splitlines())
    if any(n.startswith("/") or ".." in Path(n).parts for n in names):
        raise HostError(f"{bundle}: an entry would escape the release directory")
    bad = [n for n, d in manifest.items() if n not in names or sha256_bytes(zf.read(n)) != d]
    bad += sorted(set(names) - set(manifest) - {MANIFEST})
    if bad:
        raise HostError(f"{bundle}: checksum mismatch or unexpected files: {', '.join(bad[:10])}")
    return manifest_text


def unpack(base: Path, bundle: Path, version: str) -> dict:
    """Check every entry against MANIFEST, then unpack into releases/<version>/ atomically.

    An identical release already there is reused.

    Raises:
        HostError: the bundle fails its checks, or releases/<version>/ holds another release.
    """
    dest = release_dir(base, version)
    with zipfile.ZipFile(bundle) as zf:
        manifest_text = _checked_manifest(zf, bundle)
        retired = retire_other_models(base, _bundle_model(zf))
        if dest.exists():
            if (dest / MANIFEST).read_text() == manifest_text:
                return {"release_dir": str(dest), "reused": True}
            raise HostError(f"{dest} exists with different contents; refusing to overwrite a release")
        staging = dest.with_name(f".{version}.unpacking")
        shutil.rmtree(staging, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        zf.extractall(staging)
    os.replace(staging, dest)    # a directory: seen whole or not at all
    return {"release_dir": str(dest), "reused": False, **retired}


def _bundle_model(zf: zipfile.ZipFile) -> str | None:
    """The registered model a bundle holds a version of (its metadata.json's model_name)."""
    names = [n for n in zf.namelist() if n.startswith("model/") and n.endswith("/metadata.json")]
    return json.loads(zf.read(names[0])).get("model_name") if len(names) == 1 else None


def release_model(release: Path) -> str | None:
    """The registered model an unpacked release is a version of; None when it does not say."""
    found = sorted(release.glob("model/**/metadata.json"))
    try:
        return json.loads(found[0].read_text()).get("model_name") if len(found) == 1 else None
    except (OSError, ValueError):
        return None


def retire_other_models(base: Path, model: str | None) -> dict:
    """A host serves one model. When ``model``'s bundle arrives where another model's releases are, and no
    server runs, move that model's releases, the served state and ``current`` into retired/<model>-<time>/
    (kept, not deleted: the registry can deploy them again) and say so.

    Raises:
        HostError: another model's server runs here: it keeps serving until someone stops it.
    """
    held = {release_model(release_dir(base, v)) for v in releases(base)} - {None}
    others = sorted(held - {model}) if model else []
    if not others:
        return {}
    if server_pid(base) is not None:
        raise HostError(f"this host serves model {', '.join(others)}, and a host serves one model: it keeps serving; "
                        f"stop its server first (python -m flows stop) or give {model} a target of its own")
    archive = base / "retired" / f"{'+'.join(others)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    archive.mkdir(parents=True)
    state = run_dir(base) / STATE_FILE
    for path in (base / "releases", state, base / "current"):
        if path.exists() or path.is_symlink():
            os.replace(path, archive / path.name)
    return {"retired": {"model": others, "to": str(archive)}}


def fetch(base: Path, url: str, sha256: str, name: str, timeout: float) -> dict:
    """Download a bundle (e.g. a presigned S3 URL) into incoming/, keeping it only if the SHA-256 matches.

    The command line reads the URL from stdin: a presigned URL is a credential, and arguments are visible
    to every user of the host (``ps``).

    Raises:
        HostError: no URL, or what arrived hashes to something else (nothing is kept).
    """
    import urllib.request

    if not url:
        raise HostError("fetch reads the bundle's URL from its standard input (never from the command line); "
                        "none was given")
    final = base / "incoming" / Path(name).name
    with urllib.request.urlopen(url, timeout=timeout) as resp, replacing(final) as out:  # noqa: S310
        digest = sha256_copy(iter(lambda: resp.read(BLOCK), b""), out)
        if digest != sha256:   # raised inside: the partial file is removed, never renamed
            raise HostError(f"checksum mismatch: the fetched bundle hashes to {digest[:12]}…, "
                            f"expected {sha256[:12]}…")
    return {"path": str(final), "bytes": final.stat().st_size}
