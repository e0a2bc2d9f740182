"""Arrow columns (CSV text or typed Parquet) to typed model inputs, vectorised.

The rulebook is ``serving.contract.inputs`` (lenient mode, as for a CSV): the same nulls, the same
spellings of true and false, the same problems with the same messages. The common, clean case
runs in Arrow's compute kernels; a text column whose numbers Arrow cannot parse goes through
``serving.contract.inputs.check_typed`` cell by cell, so what is accepted and how a bad cell is reported
never depend on the path taken.

Parquet columns carry a type. A string column reads exactly like the CSV's text, whatever the schema
says: yes/no, true/false and 1/0 for booleans, numbers written as text, the same messages for a cell
that is none of those (``pandas.to_parquet`` of a CSV writes such columns). A number column may hold
booleans (0 and 1; another value is a "wrong type" cell) or, integers only, categories. Any other
pairing (a float for a category, a timestamp for anything) is one "wrong type" problem for the column.
"""

from __future__ import annotations

import numpy as np

from serving.contract.errors import Problem
from serving.contract.inputs import (
    EXPECTED,
    FALSE_TOKENS,
    MISSING_CATEGORY,
    NA_TOKENS,
    TRUE_TOKENS,
    TypedColumn,
    check_typed,
)
from serving.contract.schema import ColumnSpec, check_column, column_problem


class Cells:
    """Row-indexable view of an Arrow column, to quote a few offending cells without converting them all."""

    def __init__(self, column) -> None:
        self.column = column
        self.combined = None

    def __getitem__(self, i) -> object:
        if self.combined is None:   # only when a problem is quoted: one contiguous array, O(1) lookups
            chunked = hasattr(self.column, "combine_chunks")
            self.combined = self.column.combine_chunks() if chunked else self.column
        return self.combined[int(i)].as_py()


def _pa():
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


def _mask(values) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def text_nulls(column):
    """(stripped text, null mask): a cell is null when Arrow says so or it is one of serving's NA tokens."""
    pa, pc = _pa()
    stripped = pc.utf8_trim_whitespace(column)
    null = pc.fill_null(pc.is_in(pc.utf8_lower(stripped), value_set=pa.array(sorted(NA_TOKENS))), True)
    return stripped, _mask(pc.or_kleene(null, pc.is_null(column)).fill_null(True))


def as_text(column):
    """A label or identifier column as text: integers as "1", floats as "1" or "2.5", booleans as "true"."""
    pa, pc = _pa()
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    return pc.cast(column, pa.string())


def _categories(stripped, null: np.ndarray) -> np.ndarray:
    """Object array of str, "" where null; equal cells share one str object (20 bytes a row less each)."""
    pa, pc = _pa()
    encoded = pc.dictionary_encode(stripped).combine_chunks()
    dictionary = np.asarray(encoded.dictionary.to_pylist() + [MISSING_CATEGORY], dtype=object)
    codes = encoded.indices.fill_null(len(dictionary) - 1).to_numpy(zero_copy_only=False)
    values = dictionary[codes]
    values[null] = MISSING_CATEGORY
    return values


def _problems(spec: ColumnSpec, col: TypedColumn, shown) -> list[Problem]:
    problems = []
    if col.invalid.any():
        problems.append(column_problem(spec.name, "wrong type", f"expected {EXPECTED[spec.type]}", col.invalid,
                                       shown, 1))
    return problems + check_column(spec, col.values, col.null, shown=shown, row_base=1, skip=col.invalid)


def from_text(spec: ColumnSpec, column) -> tuple[TypedColumn, list[Problem]]:
    """A text column (CSV, or a Parquet string column), as ``check_typed`` reads it; rows are 1-based."""
    pa, pc = _pa()
    stripped, null = text_nulls(column)
    n = len(column)
    invalid = np.zeros(n, dtype=bool)
    if spec.type == "categorical":
        col = TypedColumn(_categories(stripped, null), null, invalid)
    elif spec.type == "boolean":
        lowered = pc.utf8_lower(stripped)
        true = _mask(pc.is_in(lowered, value_set=pa.array(sorted(TRUE_TOKENS))).fill_null(False))
        false = _mask(pc.is_in(lowered, value_set=pa.array(sorted(FALSE_TOKENS))).fill_null(False))
        values = np.where(true, 1.0, np.where(false, 0.0, np.nan))
        invalid = ~null & ~true & ~false
        col = TypedColumn(values, null, invalid)
    else:
        try:
            parsed = pc.cast(pc.if_else(pa.array(null), pa.nulls(n, pa.string()), stripped), pa.float64())
        except pa.ArrowInvalid:   # some cell is no number Arrow reads: Python's float() judges each cell
            return check_typed(spec, column.to_pylist())
        values = np.array(parsed.to_numpy(zero_copy_only=False), dtype=np.float64)
        values[null] = np.nan
        col = TypedColumn(values, null, invalid)
    return col, _problems(spec, col, Cells(column))


def arrow_kind(arrow_type) -> str:
    """null, boolean, integer, float (decimals too), string, or other (dates, lists, binary…)."""
    pa, _pc = _pa()
    if pa.types.is_dictionary(arrow_type):
        return arrow_kind(arrow_type.value_type)
    for kind, test in (("null", pa.types.is_null), ("boolean", pa.types.is_boolean),
                       ("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("float", pa.types.is_decimal), ("string", pa.types.is_string),
                       ("string", pa.types.is_large_string), ("string", pa.types.is_string_view)):
        if test(arrow_type):
            return kind
    return "other"


# The Parquet types each schema type accepts; a string column goes through the CSV's text rules.
ACCEPTS = {"numeric": {"integer", "float", "string"}, "integer": {"integer", "float", "string"},
           "boolean": {"boolean", "integer", "float", "string"}, "categorical": {"string", "integer"}}


WORDS = {"boolean": "booleans", "integer": "integers", "float": "decimal numbers", "string": "text"}


def from_parquet(spec: ColumnSpec, column) -> tuple[TypedColumn, list[Problem]]:
    """A Parquet column: nulls are nulls (and NaN, as "nan" is in a CSV); a type the schema contradicts is an error."""
    pa, pc = _pa()
    n = len(column)
    kind = arrow_kind(column.type)
    if kind == "null":
        null = np.ones(n, dtype=bool)
        fill = np.full(n, MISSING_CATEGORY, dtype=object) if spec.type == "categorical" else np.full(n, np.nan)
        col = TypedColumn(fill, null, np.zeros(n, dtype=bool))
        return col, _problems(spec, col, Cells(column))
    if kind not in ACCEPTS[spec.type]:
        col = TypedColumn(np.full(n, MISSING_CATEGORY if spec.type == "categorical" else np.nan,
                                  dtype=object if spec.type == "categorical" else np.float64),
                          np.zeros(n, dtype=bool), np.ones(n, dtype=bool))
        return col, [Problem(spec.name, "wrong type", f"the Parquet column holds {WORDS.get(kind, column.type)} "
                             f"({column.type}), the schema says "
                             f"{spec.type} ({EXPECTED[spec.type]}): convert the column or change the schema",
                             count=n)]
    if kind == "string" or spec.type == "categorical":
        return from_text(spec, as_text(column))
    null = _mask(pc.is_null(column))
    values = np.array(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    null |= np.isnan(values)
    invalid = ~null & ~np.isin(values, (0.0, 1.0)) if spec.type == "boolean" else np.zeros(n, dtype=bool)
    values[null | invalid] = np.nan
    col = TypedColumn(values, null, invalid)
    return col, _problems(spec, col, Cells(column))
