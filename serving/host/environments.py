"""A release's Python environment on the host (``ensure-venv``): built once per requirements, then reused.

``pip install -r requirements.txt -c constraints.txt``: the bundle's constraints pin every package the
requirements pull in (a bundle without them installs the requirements alone). Environments live in
venvs/<first 16 hex of the SHA-256 of both files>/ and appear atomically (built beside, then renamed;
``python -m …`` keeps working after the rename), one build at a time (venvs/.lock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from serving.contract.digest import sha256_bytes
from serving.contract.files import locked
from serving.host.errors import HostError
from serving.host.layout import release_dir
from serving.host.processes import run_bounded

READY = ".ready"   # written last inside a built environment: one without it is not used


def _env_digest(requirements: Path, constraints: Path | None) -> str:
    """What names an environment: the requirements, and the constraints (pins) they are installed with."""
    named = requirements.read_bytes()
    if constraints is not None:
        named += b"\0constraints.txt\0" + constraints.read_bytes()
    return sha256_bytes(named)[:16]


def _venv_of(base: Path, version: str) -> tuple[Path, Path | None, Path]:
    """A release's requirements, its constraints (None: the bundle has none) and the environment they name."""
    release = release_dir(base, version)
    requirements = release / "requirements.txt"
    constraints = release / "constraints.txt" if (release / "constraints.txt").exists() else None
    return requirements, constraints, base / "venvs" / _env_digest(requirements, constraints)


def _answer(venv: Path, created: bool) -> dict:
    return {"python": str(venv / "bin" / "python"), "created": created, "requirements_sha256": venv.name}


def _build(building: Path, requirements: Path, constraints: Path | None, timeout: float) -> None:
    """Create a virtual environment at ``building`` and install the requirements into it.

    Raises:
        HostError: venv or pip failed, or ran past ``timeout`` seconds (nothing half-built is left).
    """
    deadline = time.monotonic() + timeout
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True,
                       timeout=timeout)
        run_bounded([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
                     str(requirements), *(["-c", str(constraints)] if constraints else [])],
                    timeout=max(deadline - time.monotonic(), 1))
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise HostError(f"creating the environment for {requirements} failed: "
                        f"{(exc.stderr or b'').decode(errors='replace')[-800:]}") from None
    except subprocess.TimeoutExpired:
        shutil.rmtree(building, ignore_errors=True)
        raise HostError(f"creating the environment for {requirements} took longer than {timeout:.0f}s "
                        "(pip install timed out; the half-built environment was removed); retry, or raise "
                        "the target's venv_timeout_s on a slow host") from None


def ensure_venv(base: Path, version: str, timeout: float) -> dict:
    """The virtual environment for a release's requirements: created once, reused while they are unchanged.

    Returns:
        ``python`` (the environment's interpreter), ``created`` and ``requirements_sha256`` (its name).

    Raises:
        HostError: pip failed or ran past ``timeout`` seconds (nothing half-built is left).
    """
    requirements, constraints, venv = _venv_of(base, version)
    venvs = venv.parent
    with locked(venvs / ".lock"):
        if (venv / READY).exists():
            return _answer(venv, created=False)
        building = venvs / f".{venv.name}.building"
        shutil.rmtree(building, ignore_errors=True)
        _build(building, requirements, constraints, timeout)
        (building / READY).write_text(venv.name)
        os.replace(building, venv)   # a directory: seen whole or not at all
    return _answer(venv, created=True)


def release_venv(base: Path, version: str) -> Path | None:
    """The built environment for a release's requirements, if there is one."""
    if not (release_dir(base, version) / "requirements.txt").exists():
        return None
    venv = _venv_of(base, version)[2]
    return venv if (venv / READY).exists() else None
