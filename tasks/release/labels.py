"""Labelled rows for a recalibration, and how they are split into fitted and held-out rows.

Two sources, one shape (``LabelledRows``: the network's raw score and the label of each row, and
when it was scored if known):

    a CSV     held to version N's own contract (its metadata.json's schema), with the training data's
              messages (``tasks.training.data.validate_table``), then scored by version N's SavedModel
              through the serving loader; an optional ``scored_at`` column (epoch seconds or ISO 8601)
              orders the rows in time
    feedback  the rows each target's server kept with the labels ``POST /feedback`` brought
              (``GET /monitoring/labelled``: raw score, label, scored-at), read by the flow

The split holds out the newest ``holdout_fraction`` of the rows when they are dated (what comes next
in production looks like the recent past), else a stratified random share (seeded). Both parts need
``min_class_labels`` of each class; fewer is an error that says how many there are and how many
are needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from serving.contract.digest import sha256_bytes
from serving.contract.errors import Problem
from serving.contract.schema import schema_from_dict
from tasks.errors import DataValidationError
from tasks.training.data import validate_table
from tasks.training.sources import read_table

TIME_COLUMN = "scored_at"


@dataclass(frozen=True)
class LabelledRows:
    """Labelled rows of one version: raw network scores, labels (1 = positive) and, if known, scored-at times."""

    source: str                   # the CSV's path, or "feedback from target(s) …"
    sha256: str                   # the CSV file's, or the feedback rows' (canonical JSON)
    raw: np.ndarray
    y: np.ndarray
    at: np.ndarray | None = None  # epoch seconds

    @property
    def n(self) -> int:
        return int(self.y.size)


@dataclass(frozen=True)
class Split:
    fit: np.ndarray        # row indices
    holdout: np.ndarray
    how: str               # "time" (the newest held out) or "stratified" (seeded random)

    def to_dict(self, rows: LabelledRows) -> dict:
        return {"how": self.how, "fit_rows": int(self.fit.size), "fit_positives": int(rows.y[self.fit].sum()),
                "holdout_rows": int(self.holdout.size), "holdout_positives": int(rows.y[self.holdout].sum())}


def _times(text: np.ndarray, source: str) -> np.ndarray:
    """``scored_at`` as epoch seconds: numbers as they are, anything else as ISO 8601 (UTC unless it says)."""
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=np.float64)
    dates = pd.to_datetime(pd.Series(text), errors="coerce", utc=True, format="ISO8601")
    seconds = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    stamps = np.where(np.isnan(numbers), seconds, numbers)
    bad = np.isnan(stamps)
    if bad.any():
        rows = tuple(int(i) + 1 for i in np.flatnonzero(bad)[:10])
        raise DataValidationError([Problem(TIME_COLUMN, "wrong type", "expected epoch seconds or an ISO 8601 time",
                                           count=int(bad.sum()), rows=rows,
                                           examples=tuple(str(text[i]) for i in np.flatnonzero(bad)[:3]))], source)
    return stamps.astype(np.float64)


def labels_from_csv(path: str | Path, metadata, model) -> LabelledRows:
    """A labels CSV held to version N's contract (``metadata``) and scored by its SavedModel (``model``, a
    ``serving.contract.model.LoadedModel`` of version N).

    Raises:
        DataValidationError: every problem found, naming the file, column and rows (as for training data).
    """
    raw_table = read_table(path)
    at = None
    if TIME_COLUMN in raw_table.table.column_names:
        values = np.asarray(raw_table.table.column(TIME_COLUMN).to_pylist(), dtype=object)
        at = _times(values, raw_table.source)
        raw_table = replace(raw_table, table=raw_table.table.drop_columns([TIME_COLUMN]))
    schema = schema_from_dict(metadata.schema_, f"version {metadata.version}'s metadata.json")
    # Any size passes here: the split says how many labels of each class it needs, and has.
    ds = validate_table(raw_table, schema, min_rows=1, min_class_rows=1)
    raw = model.raw_scores({spec.name: ds.columns[spec.name] for spec in metadata.inputs})
    return LabelledRows(source=ds.source, sha256=ds.sha256, raw=raw, y=ds.y.astype(np.int64), at=at)


def labels_from_feedback(answers: dict[str, dict], version: str) -> LabelledRows:
    """The labelled rows each target's server returned (``GET /monitoring/labelled``), by target name.

    Raises:
        DataValidationError: no target holds a labelled row of ``version``.
    """
    rows = [r for answer in answers.values() for r in answer.get("rows", [])]
    where = ", ".join(sorted(answers)) or "none"
    source = f"feedback from target(s) {where}"
    if not rows:
        raise DataValidationError([Problem(None, "no labels", f"target(s) {where} hold no labelled row of version "
                                           f"{version}: send labels to POST /feedback (with the request ids "
                                           "/predict answered), or give --labels FILE")], source)
    rows.sort(key=lambda r: (r["scored_at"], r["request_id"], r["row"]))
    digest = sha256_bytes(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode())
    return LabelledRows(source=source, sha256=digest,
                        raw=np.asarray([r["raw_score"] for r in rows], dtype=np.float64),
                        y=np.asarray([r["label"] for r in rows], dtype=np.int64),
                        at=np.asarray([r["scored_at"] for r in rows], dtype=np.float64))


def split_rows(rows: LabelledRows, holdout_fraction: float, min_class_labels: int, seed: int) -> Split:
    """Fitted and held-out rows: the newest ``holdout_fraction`` held out when the rows are dated, else a
    stratified random share (``seed``).

    Raises:
        DataValidationError: a part has fewer than ``min_class_labels`` of a class (every shortfall listed).
    """
    n_holdout = int(round(rows.n * holdout_fraction))
    if rows.at is not None:
        order = np.argsort(rows.at, kind="stable")
        split = Split(fit=np.sort(order[: rows.n - n_holdout]), holdout=np.sort(order[rows.n - n_holdout:]),
                      how="time")
    else:
        rng = np.random.default_rng(seed)
        holdout = []
        for cls in (0, 1):
            members = np.flatnonzero(rows.y == cls)
            holdout.append(rng.choice(members, size=int(round(members.size * holdout_fraction)), replace=False))
        held = np.sort(np.concatenate(holdout))
        split = Split(fit=np.setdiff1d(np.arange(rows.n), held), holdout=held, how="stratified")
    short = []
    for part, index in (("fitted", split.fit), ("held-out", split.holdout)):
        for cls, name in ((1, "positive"), (0, "negative")):
            have = int(np.sum(rows.y[index] == cls))
            if have < min_class_labels:
                short.append(f"{have} {name} in the {part} rows")
    if short:
        raise DataValidationError([Problem(None, "too few labels", f"{rows.n} labelled rows ({int(rows.y.sum())} "
                                           f"positive) split {split.how} into {split.fit.size} fitted and "
                                           f"{split.holdout.size} held out: {', '.join(short)}; each part needs "
                                           f"at least {min_class_labels} of each class "
                                           "(recalibration.min_class_labels): collect more labels")],
                                  rows.source)
    return split
