"""Stage 0: read the training data (CSV or Parquet, on disk or in S3), hold it to the data contract, or draft
a contract from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.contract.errors import Problem
from serving.contract.schema import (
    ColumnSpec,
    FeatureList,
    FeatureSpec,
    Schema,
    TargetSpec,
)
from tasks.errors import DataValidationError
from tasks.training.columns import arrow_kind, as_text, from_parquet, from_text, text_nulls
from tasks.training.sources import RawTable, read_table

MAX_CATEGORIES = 50
ONE_HOT_MAX = 12


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: typed model inputs, binary labels and where they came from."""

    source: str
    sha256: str
    columns: dict[str, np.ndarray]   # every schema column, typed (see serving.contract.inputs)
    y: np.ndarray                    # 1 = positive label
    n_rows: int

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def _header_problems(header: list[str], schema: Schema, n_rows: int, min_rows: int) -> list[Problem]:
    """Columns twice, missing or not in the schema, and too few rows."""
    expected = schema.names + [schema.target.name]
    twice = sorted({c for c in header if header.count(c) > 1})
    missing = [c for c in expected if c not in header]
    extra = [c for c in dict.fromkeys(header) if c not in expected]
    problems: list[Problem] = []
    if twice:
        problems.append(Problem(None, "duplicate columns", ", ".join(twice) + " (each name once)", count=len(twice)))
    if missing:
        problems.append(Problem(None, "missing columns", ", ".join(missing), count=len(missing)))
    if extra:
        problems.append(Problem(None, "extra columns", ", ".join(extra) + " (not in the schema)", count=len(extra)))
    if n_rows < min_rows:
        problems.append(Problem(None, "too few rows", f"{n_rows} rows, at least {min_rows} needed", count=n_rows))
    return problems


def _class_problems(target: TargetSpec, classes: list[str]) -> list[Problem]:
    """The distinct labels present are not exactly the positive label and one other."""
    if len(classes) > 2:
        return [Problem(target.name, "not binary", f"{len(classes)} distinct labels, expected 2",
                        count=len(classes), examples=tuple(classes[:5]))]
    if target.positive_label not in classes:
        return [Problem(target.name, "positive label absent",
                        f"no row has the positive label {target.positive_label!r}", examples=tuple(classes[:5]))]
    if len(classes) < 2:
        return [Problem(target.name, "one class", "the target has only one class; nothing to learn",
                        examples=tuple(classes))]
    return []


def _labels(column, target: TargetSpec, n_rows: int, min_class_rows: int) -> tuple[np.ndarray, list[Problem]]:
    """The target column as 0/1 (1 = the positive label, 0 where missing) and what is wrong with it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    problems: list[Problem] = []
    labels, null = text_nulls(as_text(column))
    if null.any():
        rows = tuple(int(i) + 1 for i in np.flatnonzero(null)[:10])
        problems.append(Problem(target.name, "missing labels", "every row needs a label",
                                count=int(null.sum()), rows=rows))
    classes = sorted(pc.unique(labels.filter(pa.array(~null))).to_pylist())
    problems += _class_problems(target, classes)
    y = np.asarray(pc.equal(labels, target.positive_label).fill_null(False).to_numpy(zero_copy_only=False),
                   dtype=np.int64) & ~null
    if len(classes) == 2 and not null.any():
        smallest = int(min(y.sum(), n_rows - y.sum()))
        if smallest < min_class_rows:
            problems.append(Problem(target.name, "too few rows", f"the rarer class has {smallest} rows, "
                                    f"at least {min_class_rows} needed", count=smallest))
    return y, problems


def validate_table(raw: RawTable, schema: Schema, min_rows: int = 100, min_class_rows: int = 10) -> Dataset:
    """Hold a data file's table to the schema; raise once with every problem found.

    Rows are numbered from 1, the first data row (a CSV's header is not a row; a Parquet file's rows
    count across its row groups in the file's order).
    """
    table = raw.table
    header = table.column_names
    twice = {c for c in header if header.count(c) > 1}
    n = table.num_rows
    problems = _header_problems(header, schema, n, min_rows)

    convert = from_parquet if raw.format == "parquet" else from_text
    columns: dict[str, np.ndarray] = {}
    for spec in schema.columns:
        if spec.name not in header or spec.name in twice:
            continue
        typed, col_problems = convert(spec, table.column(spec.name))
        problems += col_problems
        columns[spec.name] = typed.values

    y = np.zeros(n, dtype=np.int64)
    if schema.target.name in header and schema.target.name not in twice:
        y, label_problems = _labels(table.column(schema.target.name), schema.target, n, min_class_rows)
        problems += label_problems
    if problems:
        raise DataValidationError(problems, raw.source)
    return Dataset(source=raw.source, sha256=raw.sha256, columns=columns, y=y, n_rows=n)


def load_dataset(data: str | Path, schema: Schema, min_rows: int = 100, min_class_rows: int = 10) -> Dataset:
    """Read and validate the training data: a CSV or Parquet file, or an ``s3://bucket/key`` URI of one.

    Raises:
        DataValidationError: every problem found, each naming the file or URI, the column and rows.
    """
    return validate_table(read_table(data), schema, min_rows, min_class_rows)


# ---------------------------------------------------------------- held-out rows

def subset(ds: Dataset, rows: np.ndarray, source: str | None = None) -> Dataset:
    """The rows ``rows`` (indices or a boolean mask) of ``ds``, in their order; same file digest."""
    rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
    return Dataset(source=source or ds.source, sha256=ds.sha256,
                   columns={name: values[rows] for name, values in ds.columns.items()}, y=ds.y[rows],
                   n_rows=int(rows.size))


def row_times(ds: Dataset, schema: Schema) -> np.ndarray:
    """The schema's time column as sortable float64: the values of an integer or numeric column, a
    categorical one's ISO 8601 dates or datetimes as nanoseconds since 1970 (UTC; a date without a
    zone is read as UTC).

    Raises:
        DataValidationError: no time column, or values that are not ISO 8601 dates (rows named).
    """
    import pandas as pd

    name = schema.time_column
    if name is None:
        raise DataValidationError([Problem(None, "no time column", "the schema names no time_column")], ds.source)
    values = ds.columns[name]
    if schema.column(name).type != "categorical":
        return values.astype(np.float64)
    parsed = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        idx = np.flatnonzero(bad)
        raise DataValidationError([Problem(name, "not a date", "the time column holds ISO 8601 dates or datetimes "
                                           "(2024-03-01, 2024-03-01T12:30:00Z)", count=int(idx.size),
                                           rows=tuple(int(i) + 1 for i in idx[:10]),
                                           examples=tuple(dict.fromkeys(repr(values[i]) for i in idx[:5])))],
                                  ds.source)
    return parsed.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)


@dataclass(frozen=True)
class HoldOut:
    """The most recent rows of a dataset, set apart from the rows a model is trained on."""

    train: Dataset
    held_out: Dataset
    time_column: str
    cutoff: str          # the held-out rows are those at or after it (the value as the data holds it)
    train_until: str     # the latest training row's time


def _shown(value) -> str:
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else f"{value:g}"
    return str(value)


def hold_out_latest(ds: Dataset, schema: Schema, fraction: float, min_rows: int, min_class_rows: int,
                    min_held_out: int) -> HoldOut:
    """Hold the most recent rows out of training: every row at or after the cut-off time, the cut-off
    chosen so that about ``fraction`` of the rows lie at or after it. Rows sharing the cut-off time all
    go to the held-out side, so no training row is as recent as a held-out one.

    Raises:
        DataValidationError: either side too small (rows, or rows of a class), naming the time column.
    """
    name = schema.time_column
    times = row_times(ds, schema)
    order = np.argsort(times, kind="stable")
    n_held = min(ds.n_rows, max(1, int(round(fraction * ds.n_rows))))
    cut = times[order[ds.n_rows - n_held]]
    held = times >= cut
    raw = ds.columns[name]
    cutoff = _shown(raw[order[ds.n_rows - n_held]])
    problems = []
    if held.all():
        problems.append(Problem(name, "no recent slice", f"every row is at or after {cutoff}; the time column "
                                "does not set the most recent rows apart", count=ds.n_rows))
    else:
        train_y, held_y = ds.y[~held], ds.y[held]
        for part, y, least in (("training", train_y, min_rows), ("held-out", held_y, min_held_out)):
            where = "before" if part == "training" else "at or after"
            if y.size < least:
                problems.append(Problem(name, "too few rows", f"{y.size} {part} rows ({where} {cutoff}), at least "
                                        f"{least} needed", count=int(y.size)))
            smallest = int(min(y.sum(), y.size - y.sum()))
            if smallest < min_class_rows:
                problems.append(Problem(name, "too few rows", f"the rarer class has {smallest} {part} rows "
                                        f"({where} {cutoff}), at least {min_class_rows} needed", count=smallest))
    if problems:
        raise DataValidationError(problems, ds.source)
    latest_train = order[np.searchsorted(times[order], cut, side="left") - 1]
    return HoldOut(train=subset(ds, ~held),
                   held_out=subset(ds, held, f"{ds.source} (rows with {name} at or after {cutoff})"),
                   time_column=name, cutoff=cutoff, train_until=_shown(raw[latest_train]))


# ---------------------------------------------------------------- inference

BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "t", "f"})


def _numeric_column(name: str, numbers: np.ndarray, nullable: bool) -> tuple[ColumnSpec, FeatureSpec]:
    import pandas as pd

    is_int = bool(np.all(np.floor(numbers) == numbers))
    lo, hi = float(numbers.min()), float(numbers.max())
    # The observed range is soft (a value outside it is drift, not an error); a quantity never seen
    # negative gets a hard floor of 0, a proposal the user may drop.
    spec = ColumnSpec(name=name, type="integer" if is_int else "numeric", nullable=nullable,
                      min=lo, max=hi, bounds="soft", hard_min=0.0 if lo >= 0 else None)
    skew = float(pd.Series(numbers).skew()) if numbers.size > 2 else 0.0
    prep = "log_standardize" if lo >= 0 and skew > 1.0 else "standardize"
    return spec, FeatureSpec(name=name, preprocessing=prep, imputation="median" if nullable else "none")


def _boolean_column(name: str, nullable: bool) -> tuple[ColumnSpec, FeatureSpec]:
    return (ColumnSpec(name=name, type="boolean", nullable=nullable),
            FeatureSpec(name=name, preprocessing="binary", imputation="most_frequent" if nullable else "none"))


def _infer_column(name: str, column, source: str) -> tuple[ColumnSpec, FeatureSpec | None, str | None]:
    """Propose a column's contract from its cells: text as a CSV holds it, or a typed Parquet column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = arrow_kind(column.type)
    if kind == "other":
        raise DataValidationError([Problem(name, "unsupported type", f"the Parquet column holds {column.type}; "
                                           "convert it to a number, boolean or string column, or drop it")], source)
    if kind in ("boolean", "integer", "float"):
        numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        null = np.isnan(numbers)
        present = numbers[~null]
        text = None
    else:
        text, null = text_nulls(as_text(column))
        text = text.filter(pa.array(~null))
        present = None
    nullable = bool(null.any())
    if int((~null).sum()) == 0:
        spec = ColumnSpec(name=name, type="categorical", nullable=True, categories=("unknown",))
        return spec, None, f"'{name}' is empty; kept in the schema, left out of the features"
    if text is None:
        if kind == "boolean" or (kind == "integer" and set(np.unique(present)) <= {0.0, 1.0}):
            return (*_boolean_column(name, nullable), None)
        finite = present[np.isfinite(present)]   # infinities are for the data check to report
        return (*_numeric_column(name, finite if finite.size else np.zeros(1), nullable), None)
    lowered = set(pc.unique(pc.utf8_lower(text)).to_pylist())
    if lowered <= BOOLEAN_WORDS or lowered <= {"0", "1"}:
        return (*_boolean_column(name, nullable), None)
    try:
        numbers = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        numbers = None
    if numbers is not None and np.isfinite(numbers).all():
        return (*_numeric_column(name, numbers, nullable), None)
    categories = sorted(pc.unique(text).to_pylist())
    spec = ColumnSpec(name=name, type="categorical", nullable=nullable, categories=tuple(categories),
                      bounds="soft")
    if len(categories) > MAX_CATEGORIES:
        return spec, None, (f"'{name}' has {len(categories)} distinct values (an identifier?); "
                            "kept in the schema, left out of the features")
    prep = "one_hot" if len(categories) <= ONE_HOT_MAX else "embedding"
    return spec, FeatureSpec(name=name, preprocessing=prep,
                             imputation="missing_category" if nullable else "none"), None


def infer_contract(data: str | Path, target: str, positive_label: str) -> tuple[Schema, FeatureList, list[str]]:
    """Draft a schema and feature list from a CSV or Parquet file (or an s3:// URI of one); returns notes
    for the user to review.

    Ranges are the observed ones: widen them to what production may legitimately send.
    """
    import pyarrow.compute as pc

    raw = read_table(data)
    table, source = raw.table, raw.source
    twice = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if twice:
        raise DataValidationError([Problem(None, "duplicate columns", ", ".join(twice) + " (each name once)",
                                           count=len(twice))], source)
    if target not in table.column_names:
        raise DataValidationError([Problem(target, "missing columns", f"target column not in {table.column_names}")],
                                  source)
    labels = set(pc.unique(pc.utf8_trim_whitespace(as_text(table.column(target)))).to_pylist()) - {None}
    if positive_label not in labels:
        raise DataValidationError([Problem(target, "positive label absent",
                                           f"no row has the label {positive_label!r}",
                                           examples=tuple(sorted(labels)[:5]))], source)
    columns, features, notes = [], [], []
    for name in table.column_names:
        if name == target:
            continue
        spec, feature, note = _infer_column(name, table.column(name), source)
        columns.append(spec)
        if feature:
            features.append(feature)
        if note:
            notes.append(note)
    schema = Schema(target=TargetSpec(name=target, positive_label=positive_label), columns=tuple(columns))
    if not features:
        raise DataValidationError([Problem(None, "no usable features", "every column was left out")], source)
    return schema, FeatureList(features=tuple(features)), notes
