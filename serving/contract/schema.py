"""The data contract: ``schema.yaml`` (columns) and ``feature_list.csv`` (preprocessing).

One implementation for training and serving. Column checks work on numpy arrays
(values plus a null mask), so a CSV of a million rows and a JSON request of one
row go through the same rules.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.contract.digest import sha256_bytes
from serving.contract.errors import ContractError, Problem

ColumnType = Literal["numeric", "integer", "categorical", "boolean"]
Preprocessing = Literal["standardize", "log_standardize", "binary", "one_hot", "embedding"]
Imputation = Literal["median", "mean", "zero", "most_frequent", "missing_category", "none"]

NUMERIC_TYPES = ("numeric", "integer")
MAX_EXAMPLES = 5
MAX_ROWS = 10

# Which preprocessing and imputation make sense for which column type.
ALLOWED_PREPROCESSING: dict[str, tuple[str, ...]] = {
    "numeric": ("standardize", "log_standardize"),
    "integer": ("standardize", "log_standardize"),
    "boolean": ("binary",),
    "categorical": ("one_hot", "embedding"),
}
ALLOWED_IMPUTATION: dict[str, tuple[str, ...]] = {
    "numeric": ("median", "mean", "zero", "none"),
    "integer": ("median", "mean", "zero", "none"),
    "boolean": ("most_frequent", "zero", "none"),
    "categorical": ("missing_category", "most_frequent", "none"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Fields added after the first contracts: left out of the canonical form while at their default,
# so the schema and feature-schema hashes of an unchanged contract do not change.
_LATER_DEFAULTS = {"bounds": "hard", "hard_min": None, "hard_max": None}


class ColumnSpec(_Strict):
    """One column of the contract.

    ``min``/``max`` and ``categories`` are hard by default: a value outside them is refused (422 at
    serving, a data error in training). With ``bounds: soft`` they describe the training data
    instead: a value outside is scored (an unknown category takes the model's out-of-vocabulary
    path) and counted as drift. ``hard_min``/``hard_max`` are always hard (``age >= 0``).
    """

    name: str = Field(min_length=1)
    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    bounds: Literal["hard", "soft"] = "hard"
    hard_min: float | None = None
    hard_max: float | None = None
    description: str | None = None

    def contract(self) -> dict:
        """The canonical JSON form: what the schema and feature-schema hashes digest."""
        data = self.model_dump(mode="json")
        for key, default in _LATER_DEFAULTS.items():
            if data.get(key) == default:
                data.pop(key)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical column '{self.name}' needs a non-empty 'categories' list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"column '{self.name}' lists a category twice")
            if any(not c.strip() for c in self.categories):
                raise ValueError(f"column '{self.name}': a category may not be empty (empty means missing)")
        elif self.categories is not None:
            raise ValueError(f"column '{self.name}' is {self.type}; only categorical columns take 'categories'")
        bounds = (self.min, self.max, self.hard_min, self.hard_max)
        if self.type not in NUMERIC_TYPES and any(b is not None for b in bounds):
            raise ValueError(f"column '{self.name}' is {self.type}; only numeric and integer columns take min/max")
        for lo, hi, what in ((self.min, self.max, "min"), (self.hard_min, self.hard_max, "hard_min")):
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"column '{self.name}': {what} {lo} is above {what.replace('min', 'max')} {hi}")
        return self

    def hard_range(self) -> tuple[float, float] | None:
        """The range outside which a value is refused (None: no numeric bound is hard)."""
        lows = [b for b in (self.hard_min, self.min if self.bounds == "hard" else None) if b is not None]
        highs = [b for b in (self.hard_max, self.max if self.bounds == "hard" else None) if b is not None]
        if not lows and not highs:
            return None
        return max(lows, default=-np.inf), min(highs, default=np.inf)

    def outside_soft_bounds(self, values: np.ndarray, null: np.ndarray) -> int:
        """How many present values lie outside soft bounds (0 for hard ones: those are refused)."""
        if self.bounds != "soft":
            return 0
        present = ~null
        if self.type == "categorical":
            return int((present & ~np.isin(values, np.asarray(self.categories, dtype=object))).sum())
        if self.min is None and self.max is None:
            return 0
        vals = values.astype(np.float64, copy=False)
        lo = -np.inf if self.min is None else self.min
        hi = np.inf if self.max is None else self.max
        with np.errstate(invalid="ignore"):
            return int((present & ((vals < lo) | (vals > hi))).sum())


class TargetSpec(_Strict):
    name: str = Field(min_length=1)
    positive_label: str = Field(min_length=1)


class Schema(_Strict):
    """The columns, the target and, optionally, the column that says when a row happened.

    ``time_column`` names one of ``columns`` (not the target), not nullable: integer or numeric values
    (epoch seconds, days, ``20240301``; larger is later) or a categorical column of ISO 8601 dates or
    datetimes. The release flow holds the most recent rows out of training to judge the candidate
    and the champion on them. It is a model input only if the feature list names it.
    """

    version: int = 1
    target: TargetSpec
    columns: tuple[ColumnSpec, ...] = Field(min_length=1)
    time_column: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Schema:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns listed twice: {dupes}")
        if self.target.name in names:
            raise ValueError(f"target '{self.target.name}' must not also be listed under columns")
        if self.time_column is not None:
            if self.time_column not in names:
                raise ValueError(f"time_column '{self.time_column}' is not one of the columns")
            col = self.column(self.time_column)
            if col.type == "boolean":
                raise ValueError(f"time_column '{col.name}' is boolean; it must be integer, numeric or categorical "
                                 "(ISO 8601 dates)")
            if col.nullable:
                raise ValueError(f"time_column '{col.name}' is nullable; every row needs a time to be ordered by")
        return self

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: equal schemas hash equal, whatever the YAML layout."""
        data = {**self.model_dump(mode="json"), "columns": [c.contract() for c in self.columns]}
        if data["time_column"] is None:   # a later field: unchanged contracts keep their hash
            data.pop("time_column")
        return canonical_digest(data)


class FeatureSpec(_Strict):
    name: str = Field(min_length=1)
    preprocessing: Preprocessing
    imputation: Imputation = "none"
    embedding_dim: int | None = Field(default=None, ge=1, le=256)


class FeatureList(_Strict):
    features: tuple[FeatureSpec, ...] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def check_against(self, schema: Schema, source: str = "feature list") -> None:
        """Raise ContractError unless every feature is a schema column with a fitting treatment."""
        errors = []
        seen = set()
        tensors: dict[str, str] = {}
        for f in self.features:
            other = tensors.setdefault(tensor_name(f.name), f.name)
            if other != f.name:
                errors.append(f"features '{other}' and '{f.name}' both map to the model input "
                              f"'{tensor_name(f.name)}'; rename one")
            if f.name in seen:
                errors.append(f"feature '{f.name}' is listed twice")
            seen.add(f.name)
            if f.name == schema.target.name:
                errors.append(f"feature '{f.name}' is the target column")
                continue
            try:
                col = schema.column(f.name)
            except KeyError:
                errors.append(f"feature '{f.name}' is not a column of the schema")
                continue
            if f.preprocessing not in ALLOWED_PREPROCESSING[col.type]:
                errors.append(f"feature '{f.name}' is {col.type}; preprocessing must be one of "
                              f"{list(ALLOWED_PREPROCESSING[col.type])}, not '{f.preprocessing}'")
            if f.imputation not in ALLOWED_IMPUTATION[col.type]:
                errors.append(f"feature '{f.name}' is {col.type}; imputation must be one of "
                              f"{list(ALLOWED_IMPUTATION[col.type])}, not '{f.imputation}'")
            if col.nullable and f.imputation == "none":
                errors.append(f"feature '{f.name}' is nullable in the schema, so it needs an imputation")
            if f.embedding_dim is not None and f.preprocessing != "embedding":
                errors.append(f"feature '{f.name}': embedding_dim only applies to preprocessing 'embedding'")
        if errors:
            raise ContractError(f"{source}: " + "; ".join(errors))


def tensor_name(column: str) -> str:
    """The name a column's input tensor and layers get: TensorFlow allows [A-Za-z0-9_.-] only."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", column)
    return safe if safe[:1].isalpha() else f"f_{safe}"


def canonical_digest(payload: object) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_bytes(blob.encode())


def feature_schema_hash(schema: Schema, features: FeatureList) -> str:
    """Digest of what a client must send: each model input's name and contract, in order.

    A change of it is a MAJOR release."""
    return canonical_digest([{k: v for k, v in schema.column(n).contract().items() if k != "description"}
                             for n in features.names])


def pydantic_message(exc: ValidationError) -> str:
    """A pydantic error as one line: each failing field's dotted location and message."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def schema_from_dict(data: object, source: str = "schema") -> Schema:
    try:
        return Schema.model_validate(data)
    except ValidationError as exc:
        raise ContractError(f"{source}: {pydantic_message(exc)}") from None


# ---------------------------------------------------------------- column checks

def column_problem(column: str, issue: str, detail: str, mask: np.ndarray, shown: np.ndarray,
             row_base: int) -> Problem:
    idx = np.flatnonzero(mask)
    examples = []
    for v in (shown[i] for i in idx):
        text = _fmt(v)
        if text not in examples:
            examples.append(text)
        if len(examples) == MAX_EXAMPLES:
            break
    return Problem(column=column, issue=issue, detail=detail, count=int(idx.size),
                   rows=tuple(int(i) + row_base for i in idx[:MAX_ROWS]), examples=tuple(examples))


MAX_EXAMPLE_CHARS = 60


def _fmt(value: object) -> str:
    """A short quotation of an input value for an error message: never recursive, never long (a
    value nested a thousand levels deep or ten megabytes long must not become the answer)."""
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    if isinstance(value, list | tuple | dict):
        return f"<{type(value).__name__} of {len(value)}>"
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > MAX_EXAMPLE_CHARS:
        return f"{text[:MAX_EXAMPLE_CHARS]}… ({len(text)} characters)"
    return text


def check_column(spec: ColumnSpec, values: np.ndarray, null: np.ndarray,
                 shown: np.ndarray | None = None, row_base: int = 1,
                 skip: np.ndarray | None = None) -> list[Problem]:
    """Check typed values of one column against its spec.

    Args:
        spec: the column's contract.
        values: float64 for numeric/integer/boolean columns, object (str) for categorical.
        null: True where the value is missing; ``values`` there is ignored.
        shown: what to quote as examples (the raw input), defaults to ``values``.
        row_base: the row number of ``values[0]`` (1 for the first data row).
        skip: rows already reported (e.g. of the wrong type), left out of every check.

    Returns:
        Every problem found, empty when the column conforms.
    """
    shown = values if shown is None else shown
    nulls = np.full(null.shape, "null", dtype=object)
    return [column_problem(spec.name, issue, detail, mask, nulls if issue == MISSING else shown, row_base)
            for issue, detail, mask in column_violations(spec, values, null, skip)]


MISSING = "missing values"


def column_violations(spec: ColumnSpec, values: np.ndarray, null: np.ndarray,
                      skip: np.ndarray | None = None) -> list[tuple[str, str, np.ndarray]]:
    """The rules of ``check_column``, each broken one as (issue, detail, mask of the rows that break it): for a
    caller that needs every row at fault (batch scoring's rejects file), not the first few a Problem quotes."""
    if skip is not None:
        null = null & ~skip
    found: list[tuple[str, str, np.ndarray]] = []
    if not spec.nullable and null.any():
        found.append((MISSING, "the schema says this column is not nullable", null))
    present = ~null if skip is None else ~null & ~skip
    if spec.type in NUMERIC_TYPES or spec.type == "boolean":
        vals = values.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            bad = present & ~np.isfinite(vals)
        found.append(("not finite", "NaN and infinity are not allowed", bad))
        ok = present & ~bad
        if spec.type == "integer":
            found.append(("not a whole number", "integer column", ok & (np.floor(vals) != vals)))
        if spec.type == "boolean":
            found.append(("wrong type", "expected true/false", ok & (vals != 0) & (vals != 1)))
        refused = spec.hard_range()
        if refused is not None:
            lo, hi = refused
            found.append(("out of range", f"allowed range is [{_fmt(lo)}, {_fmt(hi)}]",
                          ok & ((vals < lo) | (vals > hi))))
    elif spec.bounds != "soft":   # soft: unknown categories are scored (the out-of-vocabulary path), counted as drift
        known = np.isin(values, np.asarray(spec.categories, dtype=object))
        listed = ", ".join(spec.categories[:8]) + (", ..." if len(spec.categories) > 8 else "")
        found.append(("unknown category", f"allowed: {listed}", present & ~known))
    return [(issue, detail, mask) for issue, detail, mask in found if mask.any()]
