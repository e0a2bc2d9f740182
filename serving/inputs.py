"""Turning raw values (CSV text, JSON values, DataFrame columns) into typed model inputs.

Every value goes through one rulebook per column type, so the CSV used for training
and a request at serving time are read the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serving.errors import Problem
from serving.schema import ColumnSpec, _problem, check_column

NA_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0"})
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


def _to_float(value: object) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _to_bool(value: object) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        token = value.strip().lower()
        if token in TRUE_TOKENS:
            return 1.0
        if token in FALSE_TOKENS:
            return 0.0
    return None


def _to_category(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    return None


def coerce_column(spec: ColumnSpec, raw: Sequence[object]) -> TypedColumn:
    """Convert raw values to the column's type, marking nulls and values of the wrong type."""
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
        if _is_na(value):
            null[i] = True
            values[i] = fill
            continue
        converted = convert(value)
        if converted is None:
            invalid[i] = True
            values[i] = fill
        else:
            values[i] = converted
    return TypedColumn(values=values, null=null, invalid=invalid)


def check_typed(spec: ColumnSpec, raw: Sequence[object], row_base: int = 1) -> tuple[TypedColumn, list[Problem]]:
    """Coerce one column and list every way it breaks the contract."""
    col = coerce_column(spec, raw)
    shown = np.asarray(list(raw), dtype=object)
    problems = []
    if col.invalid.any():
        expected = {"numeric": "numbers", "integer": "whole numbers", "boolean": "true/false",
                    "categorical": "text"}[spec.type]
        problems.append(_problem(spec.name, "wrong type", f"expected {expected}", col.invalid, shown, row_base))
    # Values of the wrong type are reported once, above, not again as out of range or unknown.
    problems += check_column(spec, col.values, col.null, shown=shown, row_base=row_base, skip=col.invalid)
    return col, problems
