"""One chunk of a batch: typed by the contract, checked by the contract, scored by the server's own model call.

Each model input goes through the rulebook the server and training share (``serving.contract``): values are
typed with ``coerce_column`` (as training reads a CSV: "12", 12 and 12.0 are the same number, "NA" is
missing) and checked with ``column_violations``, the rules behind ``check_column``; a Parquet column already
of a numeric type skips the per-value conversion (its values are the numbers ``coerce_column`` would give).
Rows breaking a rule are rejected, one line per (row, column, rule); the others are scored with
``LoadedModel.score_columns``, the call the server's scorer thread makes, so the probabilities are the
server's to the last bit for the same typed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.contract.inputs import EXPECTED, coerce_column
from serving.contract.schema import ColumnSpec, column_violations

MAX_VALUE_CHARS = 60
REJECT_COLUMNS = ("row", "column", "issue", "detail", "value")
NUMBER_TYPES = ("numeric", "integer")


@dataclass(frozen=True)
class TypedInput:
    """One model input of a chunk: typed values, the null and wrong-type masks, and the raw values to quote."""

    values: np.ndarray
    null: np.ndarray
    invalid: np.ndarray
    raw: np.ndarray


@dataclass(frozen=True)
class ScoredChunk:
    """What one chunk gave: the scored rows' positions, inputs and scores, and the rejected rows' lines."""

    kept: np.ndarray                       # bool per input row: scored
    columns: dict[str, np.ndarray]         # typed model inputs of the scored rows
    raw: np.ndarray
    probability: np.ndarray
    rejects: dict[str, list]               # REJECT_COLUMNS -> values, one line per (row, column, rule)

    @property
    def rejected(self) -> int:
        return int((~self.kept).sum())


def _numeric_arrow(spec: ColumnSpec, arrow_type) -> bool:
    """A Parquet column whose values are already what ``coerce_column`` makes of them."""
    import pyarrow as pa

    number = pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
    if spec.type in NUMBER_TYPES:
        return number
    return spec.type == "boolean" and (number or pa.types.is_boolean(arrow_type))


def typed_input(spec: ColumnSpec, array) -> TypedInput:
    """One input column of the chunk (a pyarrow array) typed by the contract."""
    import pyarrow as pa

    if _numeric_arrow(spec, array.type):
        values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
        null = np.isnan(values)           # a null, or a NaN, which the CSV rulebook also reads as missing
        return TypedInput(values, null, np.zeros(len(values), dtype=bool), values)
    raw = np.asarray(array.to_pylist(), dtype=object)
    col = coerce_column(spec, raw)
    return TypedInput(col.values, col.null, col.invalid, raw)


def violations(spec: ColumnSpec, typed: TypedInput) -> list[tuple[str, str, np.ndarray]]:
    """Every rule of the contract the column breaks, with the mask of the rows breaking it (``check_typed``'s
    findings: a value of the wrong type is reported once, as that)."""
    found = [("wrong type", f"expected {EXPECTED[spec.type]}", typed.invalid)] if typed.invalid.any() else []
    return found + column_violations(spec, typed.values, typed.null, skip=typed.invalid)


def _shown(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    text = f"{value:g}" if isinstance(value, float | np.floating) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else f"{text[:MAX_VALUE_CHARS]}…"


def score_chunk(model, batch, first_row: int) -> ScoredChunk:
    """Type, check and score one record batch; ``first_row``: the input's row number of its first row (1-based).

    Args:
        model: a ``serving.contract.model.LoadedModel`` (verified).
        batch: a pyarrow RecordBatch holding at least the model's inputs.
    """
    n = batch.num_rows
    bad = np.zeros(n, dtype=bool)
    columns: dict[str, np.ndarray] = {}
    rejects: dict[str, list] = {k: [] for k in REJECT_COLUMNS}
    for name, spec in model.specs.items():
        typed = typed_input(spec, batch.column(name))
        columns[name] = typed.values
        for issue, detail, mask in violations(spec, typed):
            bad |= mask
            idx = np.flatnonzero(mask)
            rejects["row"] += (idx + first_row).tolist()
            rejects["column"] += [name] * idx.size
            rejects["issue"] += [issue] * idx.size
            rejects["detail"] += [detail] * idx.size
            rejects["value"] += ["null" if issue == "missing values" else _shown(typed.raw[i]) for i in idx]
    kept = ~bad
    scored = {name: values[kept] for name, values in columns.items()} if bad.any() else columns
    if kept.any():
        raw, prob = model.score_columns(scored)
    else:
        raw = prob = np.zeros(0, dtype=np.float64)
    return ScoredChunk(kept, scored, raw, prob, rejects)
