"""Where a version's code came from: the pipeline checkout's git commit, tag and whether it was dirty.

Recorded in metadata.json's ``lineage`` and on the MLflow run and version beside the data file's
SHA-256, so a served model names the code that made it (the guide deploys from tagged code).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tasks.constants import ROOT

CODE_TAGS = ("code_commit", "code_tag", "code_dirty")   # also set on the MLflow run and version


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_lineage(root: Path = ROOT) -> dict[str, str | bool | None]:
    """``code_commit`` (None outside a git checkout, with ``code_note`` saying so), ``code_tag`` (a tag on
    that commit, or None), ``code_dirty`` (tracked files changed since the commit)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"code_commit": None, "code_tag": None, "code_dirty": None,
                "code_note": f"{root} is not a git checkout (or git is missing): the code is not identified"}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"code_commit": commit, "code_tag": _git(root, "describe", "--tags", "--exact-match", "HEAD"),
            "code_dirty": bool(status) if status is not None else None}
