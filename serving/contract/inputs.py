"""Turning raw values (CSV text, JSON values, DataFrame columns) into typed model inputs.

Every value goes through one rulebook per column type, so the CSV used for training
and a request at serving time are read the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

import numpy as np

from serving.contract.errors import Problem
from serving.contract.schema import ColumnSpec, check_column, column_problem

NA_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0"})
EXPECTED = {"numeric": "a number", "integer": "a whole number", "boolean": "true or false",
            "categorical": "a string"}
# How a missing categorical value reaches the model graph (categories may not be empty).
MISSING_CATEGORY = ""


@dataclass(frozen=True)
class TypedColumn:
    values: np.ndarray   # float64 (NaN where null) or object array of str ("" where null)
    null: np.ndarray     # bool
    invalid: np.ndarray  # bool: present but not of the column's type


def _is_na(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, str):
        return value.strip().lower() in NA_TOKENS
    return False


def _to_float(value: object, strict: bool = False) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str) and not strict:
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _to_bool(value: object, strict: bool = False) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):     # every spelling training accepts, JSON included ("yes", "no", …)
        token = value.strip().lower()
        if token in TRUE_TOKENS:
            return 1.0
        if token in FALSE_TOKENS:
            return 0.0
    return None


def _to_category(value: object, strict: bool = False) -> str | None:
    if isinstance(value, str):
        return value if strict else value.strip()
    if isinstance(value, bool | np.bool_) or strict:
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    return None


def coerce_column(spec: ColumnSpec, raw: Sequence[object], strict: bool = False) -> TypedColumn:
    """Convert raw values to the column's type, marking nulls and values of the wrong type.

    ``strict`` is for JSON: a string is never a number or a boolean there, a number is
    never a category, and only ``null`` is missing. Lenient mode reads CSV text.
    """
    n = len(raw)
    null = np.zeros(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool)
    if spec.type == "categorical":
        values = np.empty(n, dtype=object)
        convert = _to_category
        fill: object = MISSING_CATEGORY
    else:
        values = np.empty(n, dtype=np.float64)
        convert = _to_bool if spec.type == "boolean" else _to_float
        fill = np.nan
    for i, value in enumerate(raw):
        if value is None or value is _ABSENT or (not strict and _is_na(value)):
            null[i] = True
            values[i] = fill
            continue
        converted = convert(value, strict)
        if converted is None:
            invalid[i] = True
            values[i] = fill
        else:
            values[i] = converted
    return TypedColumn(values=values, null=null, invalid=invalid)


class _Absent:
    """Marks a feature missing from a JSON row (as opposed to present and null)."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
_NONE = type(None)
_FAST_KINDS = {
    "numeric": frozenset({float, int}), "integer": frozenset({float, int}),
    "boolean": frozenset({bool, int}), "categorical": frozenset({str}),
}


def coerce_json_column(spec: ColumnSpec, values: Sequence, kinds: set | None = None) -> TypedColumn:
    """``coerce_column(strict=True)`` with a vectorised path for the common, well-typed case.

    ``kinds``: the set of the values' types, when the caller already has it."""
    kinds = set(map(type, values)) if kinds is None else kinds
    fast = _FAST_KINDS[spec.type]
    if not kinds <= fast | {_NONE}:
        return coerce_column(spec, values, strict=True)
    n = len(values)
    invalid = np.zeros(n, dtype=bool)
    if spec.type == "categorical":
        arr = np.array(values, dtype=object)
        if _NONE in kinds:
            null = np.fromiter((v is None for v in values), dtype=bool, count=n)
            arr[null] = MISSING_CATEGORY
        else:
            null = invalid.copy()
        return TypedColumn(arr, null, invalid)
    arr = np.array(values, dtype=np.float64)   # None becomes NaN; JSON itself has no NaN
    null = np.isnan(arr) if _NONE in kinds else invalid.copy()
    return TypedColumn(arr, null, invalid)


@lru_cache(maxsize=1024)
def _category_set(categories: tuple[str, ...]) -> frozenset[str]:
    return frozenset(categories)


def conforms(spec: ColumnSpec, values: Sequence, kinds: set, col: TypedColumn) -> bool:
    """True only when ``check_column`` would find nothing in this column of JSON values, decided with a
    couple of reductions (min, max, a set inclusion) instead of one mask per rule.

    Only for the common case: every value of the column's JSON type or, in a nullable column, null;
    any other column answers False and goes through the full checks, which name each row and value at
    fault.

    Args:
        spec: the column's contract.
        values: the raw JSON values.
        kinds: the set of their Python types.
        col: ``coerce_json_column(spec, values, kinds)``.
    """
    if not values:
        return False
    present_kinds = kinds - {_NONE}
    if present_kinds != kinds and not spec.nullable:
        return False
    if not present_kinds <= _FAST_KINDS[spec.type]:
        return False
    typed = col.values if present_kinds == kinds else col.values[~col.null]
    if typed.size == 0:
        return True
    if spec.type == "categorical":
        if spec.bounds == "soft":
            return True
        return (set(values) - {None} if present_kinds != kinds else set(values)) <= _category_set(spec.categories)
    low, high = float(typed.min()), float(typed.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    if spec.type == "boolean":
        return present_kinds == {bool} or (low >= 0.0 and high <= 1.0)
    if spec.type == "integer" and present_kinds != {int} and not bool((np.floor(typed) == typed).all()):
        return False
    bounds = spec.hard_range()
    return bounds is None or (bounds[0] <= low and high <= bounds[1])


def _by_column(names: list[str], rows: list[dict]) -> list[Sequence] | None:
    """Each feature's values across the rows, one pass over the rows in C per feature (no row tuples to
    transpose); None when a row lacks one of them (the caller then reads feature by feature to name what
    is missing where)."""
    try:
        return [list(map(itemgetter(name), rows)) for name in names]
    except KeyError:
        return None


def read_json_rows(specs: dict[str, ColumnSpec], rows: list[dict], policy: frozenset[str] = frozenset()
                   ) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """Typed model inputs from JSON rows, and every contract problem (rows are 0-based).

    Args:
        specs: the model's input columns.
        rows: one dict per row; keys other than the inputs are ignored.
        policy: problem kinds to let through ("out of range", "unknown category").
    """
    columns: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    whole = _by_column(list(specs), rows)
    for i, (name, spec) in enumerate(specs.items()):
        raw = whole[i] if whole is not None else [r.get(name, _ABSENT) for r in rows]
        kinds = set(map(type, raw))
        col = coerce_json_column(spec, raw, kinds)
        columns[name] = col.values
        if whole is not None and conforms(spec, raw, kinds, col):
            continue
        absent = np.fromiter((v is _ABSENT for v in raw), dtype=bool, count=len(raw)) \
            if col.null.any() else None
        if absent is not None and absent.any():
            problems.append(column_problem(name, "missing feature", "every row needs this feature (null if unknown)",
                                           absent, np.full(absent.shape, "<absent>", dtype=object), 0))
        skip = col.invalid if absent is None else (col.invalid | absent)
        if col.invalid.any():
            problems.append(column_problem(name, "wrong type", f"expected {EXPECTED[spec.type]}", col.invalid,
                                           raw, 0))
        found = check_column(spec, col.values, col.null, shown=raw, row_base=0, skip=skip)
        problems += [p for p in found if p.issue not in policy]
    return columns, problems


def check_typed(spec: ColumnSpec, raw: Sequence[object], row_base: int = 1) -> tuple[TypedColumn, list[Problem]]:
    """Coerce one column and list every way it breaks the contract."""
    col = coerce_column(spec, raw)
    shown = np.asarray(list(raw), dtype=object)
    problems = []
    if col.invalid.any():
        problems.append(column_problem(spec.name, "wrong type", f"expected {EXPECTED[spec.type]}", col.invalid,
                                       shown, row_base))
    # Values of the wrong type are reported once, above, not again as out of range or unknown.
    problems += check_column(spec, col.values, col.null, shown=shown, row_base=row_base, skip=col.invalid)
    return col, problems
