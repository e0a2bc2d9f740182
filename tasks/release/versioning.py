"""Release numbers MAJOR.MINOR.PATCH for model versions.

MAJOR: the feature schema (the inputs clients must send) changed.
MINOR: a retrained network on the same inputs.
PATCH: the same network, recalibrated (no stage produces one yet).
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
