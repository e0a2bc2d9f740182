"""Release numbers MAJOR.MINOR.PATCH for model versions.

MAJOR: the feature schema (the inputs clients must send) changed.
MINOR: a retrained network on the same inputs.
PATCH: the same network, recalibrated (``python -m flows recalibrate``): the next free patch of the
       recalibrated version's MAJOR.MINOR, so recalibrating 1.2.0 gives 1.2.1, and recalibrating
       1.2.0 or 1.2.1 once 1.2.1 exists gives 1.2.2 (a release number, once taken, is never given again).
"""

from __future__ import annotations

import re

from tasks.registry import PriorRelease

_RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def parse_release(text: str) -> tuple[int, int, int]:
    match = _RELEASE.match(text or "")
    if not match:
        raise ValueError(f"not a MAJOR.MINOR.PATCH release: {text!r}")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def next_release(prior: PriorRelease | None, feature_schema_hash: str) -> str:
    """The release number of a retrained version, given the latest one before it."""
    if prior is None:
        return "1.0.0"
    major, minor, _patch = parse_release(prior.release)
    if prior.feature_schema_hash != feature_schema_hash:
        return f"{major + 1}.0.0"
    return f"{major}.{minor + 1}.0"


def next_patch(of: str, taken: list[str]) -> str:
    """The release number of a recalibration of release ``of``: its MAJOR.MINOR with the next patch free among
    ``taken`` (every release number the registry has given, failed ones included)."""
    major, minor, patch = parse_release(of)
    given = [parse_release(t) for t in taken if _RELEASE.match(t or "")]
    patches = [p for m, n, p in given if (m, n) == (major, minor)]
    return f"{major}.{minor}.{max([patch, *patches]) + 1}"
