"""Release numbers MAJOR.MINOR.PATCH for model versions.

MAJOR: the feature schema (the inputs clients must send) changed.
MINOR: a retrained network on the same inputs.
PATCH: the same network, recalibrated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from serving.schema import FeatureList, Schema, canonical_digest

Change = Literal["retrain", "recalibrate"]
_RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True)
class PriorRelease:
    release: str
    feature_schema_hash: str


def parse_release(text: str) -> tuple[int, int, int]:
    match = _RELEASE.match(text or "")
    if not match:
        raise ValueError(f"not a MAJOR.MINOR.PATCH release: {text!r}")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def next_release(prior: PriorRelease | None, feature_schema_hash: str, change: Change) -> str:
    """The release number of a new version, given the latest one before it."""
    if prior is None:
        return "1.0.0"
    major, minor, patch = parse_release(prior.release)
    if prior.feature_schema_hash != feature_schema_hash:
        return f"{major + 1}.0.0"
    if change == "recalibrate":
        return f"{major}.{minor}.{patch + 1}"
    if change == "retrain":
        return f"{major}.{minor + 1}.0"
    raise ValueError(f"unknown change {change!r}")


def feature_schema_hash(schema: Schema, features: FeatureList) -> str:
    """Digest of what a client must send: each model input's name and contract, in order."""
    return canonical_digest([schema.column(n).model_dump(mode="json", exclude={"description"})
                             for n in features.names])
