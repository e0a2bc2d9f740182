"""Parquet training data: the same contract, the same messages as a CSV; typed columns checked against the schema."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.contract.digest import sha256_file
from tasks.contract_files import load_schema
from tasks.errors import DataValidationError
from tasks.training.data import infer_contract, load_dataset

pytestmark = pytest.mark.unit


@pytest.fixture
def typed_frame(demo_frame):
    """The demo frame as a typed file holds it: has_mortgage a boolean column, not the words."""
    frame = demo_frame.copy()
    frame["has_mortgage"] = frame["has_mortgage"] == "true"
    return frame


def _parquet(frame, path, **kw):
    frame.to_parquet(path, index=False, **kw)
    return path


def _problems(path, schema, **kw):
    with pytest.raises(DataValidationError) as info:
        load_dataset(path, schema, **kw)
    return info.value, {(p.column, p.issue): p for p in info.value.problems}


def test_parquet_gives_exactly_the_csvs_dataset(tmp_path, typed_frame, schema_path):
    schema = load_schema(schema_path)
    csv, parquet = tmp_path / "d.csv", _parquet(typed_frame, tmp_path / "d.parquet", row_group_size=200)
    typed_frame.to_csv(csv, index=False)
    a, b = load_dataset(csv, schema, min_rows=50), load_dataset(parquet, schema, min_rows=50)
    assert b.n_rows == a.n_rows == 900 and b.positives == a.positives
    np.testing.assert_array_equal(b.y, a.y)
    assert b.columns.keys() == a.columns.keys()
    for name in a.columns:
        assert b.columns[name].dtype == a.columns[name].dtype, name
        np.testing.assert_array_equal(b.columns[name], a.columns[name])   # NaN where null, in both
    assert np.isnan(b.columns["income"]).sum() == typed_frame["income"].isna().sum() > 0
    assert (b.source, b.sha256) == (str(parquet), sha256_file(parquet))   # the lineage: the file's own bytes
    # Found by its magic bytes too, whatever the name.
    renamed = tmp_path / "export.dat"
    renamed.write_bytes(parquet.read_bytes())
    np.testing.assert_array_equal(load_dataset(renamed, schema, min_rows=50).columns["region"], a.columns["region"])


def test_a_type_the_schema_contradicts_is_one_clear_problem(tmp_path, typed_frame, schema_path):
    frame = typed_frame.copy()
    frame["region"] = np.arange(len(frame)) / 7.0         # floats for a category
    frame["has_mortgage"] = pd.Timestamp("2026-01-01")    # a timestamp for a boolean
    err, by = _problems(_parquet(frame, tmp_path / "typed.parquet"), load_schema(schema_path), min_rows=50)
    assert set(by) == {("region", "wrong type"), ("has_mortgage", "wrong type")}
    assert "holds decimal numbers (double), the schema says categorical" in by[("region", "wrong type")].detail
    assert "timestamp" in by[("has_mortgage", "wrong type")].detail
    assert "typed.parquet" in str(err) and "column 'region'" in str(err)


def test_text_columns_read_like_the_csv_they_came_from(tmp_path, demo_frame, schema_path):
    """pandas.read_csv then to_parquet keeps yes/no and numbers-as-text as text columns: the Parquet file gives
    the CSV's dataset, and a cell that is wrong in both gives the same problem in both."""
    schema = load_schema(schema_path)
    frame = demo_frame.copy()
    frame["has_mortgage"] = np.where(frame["has_mortgage"] == "true", "Yes", "no")
    frame["age"] = frame["age"].astype(str)                         # numbers written as text
    csv = tmp_path / "words.csv"
    frame.to_csv(csv, index=False)
    read_back = pd.read_csv(csv, dtype={"age": str})
    parquet = _parquet(read_back, tmp_path / "words.parquet")
    a, b = load_dataset(csv, schema, min_rows=50), load_dataset(parquet, schema, min_rows=50)
    np.testing.assert_array_equal(b.y, a.y)
    for name in a.columns:
        np.testing.assert_array_equal(b.columns[name], a.columns[name])
    assert set(np.unique(b.columns["has_mortgage"])) == {0.0, 1.0}

    read_back.loc[3, "age"], read_back.loc[5, "has_mortgage"] = "forty", "maybe"
    read_back.to_csv(csv, index=False)
    _err, from_csv = _problems(csv, schema, min_rows=50)
    _err, from_parquet = _problems(_parquet(read_back, tmp_path / "bad.parquet"), schema, min_rows=50)
    assert set(from_parquet) == set(from_csv) == {("age", "wrong type"), ("has_mortgage", "wrong type")}
    for key in from_csv:
        assert (from_parquet[key].detail, from_parquet[key].rows) == (from_csv[key].detail, from_csv[key].rows)


def test_numbers_in_a_boolean_column_are_0_and_1(tmp_path, typed_frame, schema_path):
    frame = typed_frame.copy()
    frame["has_mortgage"] = frame["has_mortgage"].astype(float)      # 0.0 / 1.0, as pandas writes with NaN
    ds = load_dataset(_parquet(frame, tmp_path / "f.parquet"), load_schema(schema_path), min_rows=50)
    assert set(np.unique(ds.columns["has_mortgage"])) == {0.0, 1.0}
    frame.loc[4, "has_mortgage"] = 2.0
    _err, by = _problems(_parquet(frame, tmp_path / "two.parquet"), load_schema(schema_path), min_rows=50)
    assert set(by) == {("has_mortgage", "wrong type")} and by[("has_mortgage", "wrong type")].rows == (5,)


def test_nulls_are_nulls(tmp_path, typed_frame, schema_path):
    frame = typed_frame.copy()
    frame["age"] = frame["age"].astype("Int64")
    frame.loc[[4, 9], "age"] = pd.NA                       # null in a non-nullable integer column
    frame["region"] = frame["region"].astype(object)
    frame.loc[2, "region"] = None                          # and in a non-nullable category
    frame["default"] = frame["default"].astype("Int64")
    frame.loc[6, "default"] = pd.NA                        # a row without a label
    err, by = _problems(_parquet(frame, tmp_path / "nulls.parquet"), load_schema(schema_path), min_rows=50)
    assert by[("age", "missing values")].rows == (5, 10)
    assert by[("region", "missing values")].rows == (3,)
    assert by[("default", "missing labels")].rows == (7,)
    # In a nullable column a null (or NaN) is just missing.
    ok = typed_frame.copy()
    ok.loc[[1, 2], "income"] = np.nan
    ds = load_dataset(_parquet(ok, tmp_path / "ok.parquet"), load_schema(schema_path), min_rows=50)
    assert np.isnan(ds.columns["income"][[1, 2]]).all()


def test_a_bad_value_names_file_row_and_column_across_row_groups(tmp_path, typed_frame, schema_path):
    frame = typed_frame.copy()
    frame["age"] = frame["age"].astype(float)
    frame.loc[5, "age"] = 12.5                     # row 6, in the first row group
    frame.loc[450, "debt_ratio"] = -2.0            # row 451, in the fifth
    frame.loc[899, "region"] = "atlantis"          # the last row
    frame.loc[700, "income"] = np.inf
    path = _parquet(frame, tmp_path / "bad.parquet", row_group_size=100)
    assert pq.ParquetFile(path).num_row_groups == 9
    err, by = _problems(path, load_schema(schema_path), min_rows=50)
    assert by[("age", "not a whole number")].rows == (6,) and by[("age", "not a whole number")].examples == ("12.5",)
    assert by[("debt_ratio", "out of range")].rows == (451,)
    assert by[("region", "unknown category")].rows == (900,) and by[("region", "unknown category")].examples == (
        "'atlantis'",)
    assert by[("income", "not finite")].rows == (701,)
    assert "bad.parquet" in str(err) and "rows 451" in str(err)
    # The same values in a CSV: the same problems, rows and messages.
    csv = tmp_path / "bad.csv"
    frame.to_csv(csv, index=False)
    _err, by_csv = _problems(csv, load_schema(schema_path), min_rows=50)
    assert {k: (p.rows, p.detail) for k, p in by_csv.items()} == {k: (p.rows, p.detail) for k, p in by.items()}


def test_unreadable_parquet_and_ragged_csv_rows(tmp_path, demo_csv, schema_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 64)
    err, by = _problems(broken, load_schema(schema_path))
    assert list(by) == [(None, "unreadable Parquet")] and "broken.parquet" in str(err)
    # A CSV row with too many or too few fields is named (pandas padded a short row with nulls).
    lines = demo_csv.read_text().splitlines()
    lines[3] += ",7"
    lines[8] = lines[8].rsplit(",", 2)[0]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join(lines) + "\n")
    _err, by = _problems(ragged, load_schema(schema_path), min_rows=50)
    assert by[(None, "wrong number of fields")].rows == (3, 8)


def test_infer_contract_from_parquet_matches_the_csv(tmp_path, typed_frame):
    csv = tmp_path / "d.csv"
    typed_frame.to_csv(csv, index=False)
    frame = typed_frame.copy()
    frame["purpose"] = pd.Categorical(frame["purpose"])    # a dictionary-encoded string column
    parquet = _parquet(frame, tmp_path / "d.parquet")
    from_csv, from_parquet = infer_contract(csv, "default", "1"), infer_contract(parquet, "default", "1")
    assert from_parquet[0] == from_csv[0] and from_parquet[1] == from_csv[1]
    load_dataset(parquet, from_parquet[0], min_rows=50)
    # An integer label is matched as text, as a CSV's is.
    with pytest.raises(DataValidationError, match="no row has the label 'yes'"):
        infer_contract(parquet, "default", "yes")


def test_infer_contract_refuses_a_column_it_cannot_type(tmp_path, typed_frame):
    frame = typed_frame.copy()
    frame["opened"] = pd.Timestamp("2026-01-01")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataValidationError, match="column 'opened': unsupported type"):
        infer_contract(tmp_path / "t.parquet", "default", "1")
