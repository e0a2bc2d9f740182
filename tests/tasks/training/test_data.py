"""Validation before training: every kind of bad input, all reported in one error."""

import numpy as np
import pytest

from tasks.contract_files import load_schema
from tasks.errors import DataValidationError
from tasks.training.data import infer_contract, load_dataset

pytestmark = pytest.mark.unit


def _write(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _problems(path, schema, **kw):
    with pytest.raises(DataValidationError) as info:
        load_dataset(path, schema, **kw)
    return info.value


def test_demo_conforms(demo_csv, schema_path):
    ds = load_dataset(demo_csv, load_schema(schema_path), min_rows=50)
    assert ds.n_rows == 900
    assert 0 < ds.positives < ds.n_rows
    assert len(ds.sha256) == 64
    assert np.isnan(ds.columns["income"]).any()          # missing incomes are kept as NaN
    assert set(ds.columns["region"]) <= {"central", "east", "north", "south", "west"}


def test_every_problem_is_reported_together(tmp_path, demo_frame, schema_path):
    bad = demo_frame.copy().astype(object)
    bad = bad.drop(columns=["credit_lines"])
    bad["surprise"] = 1
    bad.loc[3, "age"] = "forty"            # wrong type
    bad.loc[5, "age"] = 12.5               # not a whole number
    bad.loc[7, "debt_ratio"] = -2          # out of range
    bad.loc[8, "region"] = "atlantis"      # unknown category
    bad.loc[9, "has_mortgage"] = "maybe"   # not a boolean
    bad.loc[10, "late_payments"] = None    # null in a non-nullable column
    err = _problems(_write(tmp_path, bad), load_schema(schema_path), min_rows=50)
    text = str(err)
    by_issue = {(p.column, p.issue): p for p in err.problems}
    assert (None, "missing columns") in by_issue and "credit_lines" in by_issue[(None, "missing columns")].detail
    assert (None, "extra columns") in by_issue and "surprise" in by_issue[(None, "extra columns")].detail
    assert by_issue[("age", "wrong type")].rows == (4,)
    assert by_issue[("age", "not a whole number")].rows == (6,)
    assert "'forty'" in by_issue[("age", "wrong type")].examples
    assert by_issue[("debt_ratio", "out of range")].rows == (8,)
    assert by_issue[("region", "unknown category")].examples == ("'atlantis'",)
    assert ("has_mortgage", "wrong type") in by_issue
    assert by_issue[("late_payments", "missing values")].rows == (11,)
    assert "data.csv" in text and "column 'age'" in text and "rows 4" in text


def test_target_with_one_class(tmp_path, demo_frame, schema_path):
    frame = demo_frame.copy()
    frame["default"] = 0
    err = _problems(_write(tmp_path, frame), load_schema(schema_path), min_rows=50)
    assert [p.issue for p in err.problems] == ["positive label absent"]
    frame["default"] = 1
    err = _problems(_write(tmp_path, frame), load_schema(schema_path), min_rows=50)
    assert [p.issue for p in err.problems] == ["one class"]


def test_target_not_binary_and_missing_labels(tmp_path, demo_frame, schema_path):
    frame = demo_frame.copy().astype({"default": object})
    frame.loc[0, "default"] = 2
    frame.loc[1, "default"] = None
    err = _problems(_write(tmp_path, frame), load_schema(schema_path), min_rows=50)
    issues = {p.issue for p in err.problems}
    assert {"not binary", "missing labels"} <= issues


def test_too_few_rows(tmp_path, demo_frame, schema_path):
    err = _problems(_write(tmp_path, demo_frame.head(30)), load_schema(schema_path), min_rows=100)
    assert any(p.issue == "too few rows" and "30 rows" in p.detail for p in err.problems)


def test_rare_class_too_small(tmp_path, demo_frame, schema_path):
    frame = demo_frame.copy()
    positives = frame.index[frame["default"] == 1]
    frame.loc[positives[3:], "default"] = 0
    err = _problems(_write(tmp_path, frame), load_schema(schema_path), min_rows=50, min_class_rows=10)
    assert any(p.issue == "too few rows" and "rarer class has 3" in p.detail for p in err.problems)


def test_missing_file_and_garbage(tmp_path, schema_path):
    err = _problems(tmp_path / "absent.csv", load_schema(schema_path))
    assert err.problems[0].issue == "file not found"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _problems(empty, load_schema(schema_path)).problems[0].issue == "unreadable CSV"


def test_column_order_does_not_matter(tmp_path, demo_frame, schema_path):
    schema = load_schema(schema_path)
    a = load_dataset(_write(tmp_path, demo_frame, "a.csv"), schema, min_rows=50)
    shuffled = demo_frame[list(reversed(demo_frame.columns))]
    b = load_dataset(_write(tmp_path, shuffled, "b.csv"), schema, min_rows=50)
    for name in schema.names:
        np.testing.assert_array_equal(a.columns[name], b.columns[name])
    np.testing.assert_array_equal(a.y, b.y)


def test_inferred_contract_accepts_its_own_data(demo_csv):
    schema, features, notes = infer_contract(demo_csv, "default", "1")
    types = {c.name: c.type for c in schema.columns}
    assert types == {"age": "integer", "income": "numeric", "debt_ratio": "numeric", "credit_lines": "integer",
                     "late_payments": "integer", "employment_years": "numeric", "region": "categorical",
                     "purpose": "categorical", "has_mortgage": "boolean"}
    assert schema.column("income").nullable and not schema.column("age").nullable
    prep = {f.name: (f.preprocessing, f.imputation) for f in features.features}
    assert prep["income"] == ("log_standardize", "median")
    assert prep["region"] == ("one_hot", "none")
    assert prep["has_mortgage"] == ("binary", "none")
    features.check_against(schema)
    load_dataset(demo_csv, schema, min_rows=50)
    assert notes == []


def test_inference_leaves_identifiers_out(tmp_path, demo_frame):
    frame = demo_frame.copy()
    frame.insert(0, "customer_id", [f"c{i:05d}" for i in range(len(frame))])
    schema, features, notes = infer_contract(_write(tmp_path, frame), "default", "1")
    assert "customer_id" in schema.names and "customer_id" not in features.names
    assert any("customer_id" in n for n in notes)


def test_inference_rejects_unknown_target_or_label(demo_csv):
    with pytest.raises(DataValidationError, match="target column not in"):
        infer_contract(demo_csv, "nope", "1")
    with pytest.raises(DataValidationError, match="no row has the label 'yes'"):
        infer_contract(demo_csv, "default", "yes")
