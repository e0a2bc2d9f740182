"""The most recent rows held out from training (the schema's time_column), and the contract's checks of it."""

import numpy as np
import pytest
import yaml

from serving.contract.errors import ContractError
from serving.contract.schema import canonical_digest, schema_from_dict
from tasks.errors import DataValidationError
from tasks.training.data import hold_out_latest, load_dataset, subset

pytestmark = pytest.mark.unit


def _contract(schema_path, column: dict | None, time_column: str | None):
    data = yaml.safe_load(schema_path.read_text())
    if column:
        data["columns"].append(column)
    if time_column:
        data["time_column"] = time_column
    return schema_from_dict(data, "test schema")


def _with_time(tmp_path, frame, values, name="applied_day"):
    frame = frame.copy()
    frame[name] = values
    path = tmp_path / "timed.csv"
    frame.to_csv(path, index=False)
    return path


def test_the_most_recent_share_is_held_out_and_training_rows_are_all_older(tmp_path, demo_frame, schema_path):
    rng = np.random.default_rng(3)
    days = rng.integers(0, 120, size=len(demo_frame))          # many rows share a day
    schema = _contract(schema_path, {"name": "applied_day", "type": "integer"}, "applied_day")
    ds = load_dataset(_with_time(tmp_path, demo_frame, days), schema, min_rows=50)
    held = hold_out_latest(ds, schema, 0.2, min_rows=50, min_class_rows=10, min_held_out=50)
    train_days, held_days = held.train.columns["applied_day"], held.held_out.columns["applied_day"]
    assert train_days.max() < held_days.min()                  # ties at the cut-off all go to the held-out side
    assert held.train.n_rows + held.held_out.n_rows == ds.n_rows
    assert held.held_out.n_rows == int((days >= float(held.cutoff)).sum())
    assert abs(held.held_out.n_rows - 0.2 * ds.n_rows) <= (days == float(held.cutoff)).sum()
    assert held.train_until == str(int(train_days.max()))
    # The rows keep their labels and every other column.
    expected = np.flatnonzero(days >= float(held.cutoff))
    assert np.array_equal(held.held_out.y, ds.y[expected])
    assert np.array_equal(held.held_out.columns["region"], ds.columns["region"][expected])
    assert held.held_out.sha256 == ds.sha256 and "applied_day at or after" in held.held_out.source


def test_iso_dates_order_the_rows(tmp_path, demo_frame, schema_path):
    n = len(demo_frame)
    stamps = np.datetime64("2024-01-01") + np.arange(n)[::-1].astype("timedelta64[D]")   # newest first in the file
    dates = np.array([str(d) for d in stamps], dtype=object)
    dates[5] = f"{dates[5]}T12:30:00Z"                         # a datetime among dates
    schema = _contract(schema_path, {"name": "applied_on", "type": "categorical", "bounds": "soft",
                                     "categories": ["2024-01-01"]}, "applied_on")
    ds = load_dataset(_with_time(tmp_path, demo_frame, dates, "applied_on"), schema, min_rows=50)
    held = hold_out_latest(ds, schema, 0.1, min_rows=50, min_class_rows=5, min_held_out=20)
    assert held.held_out.n_rows == round(0.1 * n)
    assert set(held.held_out.columns["applied_on"]) == set(dates[: held.held_out.n_rows])   # the first (newest) rows
    assert held.train_until < held.cutoff


def test_values_that_are_not_dates_are_named_by_row(tmp_path, demo_frame, schema_path):
    dates = np.array(["2024-02-01"] * len(demo_frame), dtype=object)
    dates[[3, 7]] = ["yesterday", "2024-13-45"]
    schema = _contract(schema_path, {"name": "applied_on", "type": "categorical", "bounds": "soft",
                                     "categories": ["2024-02-01"]}, "applied_on")
    ds = load_dataset(_with_time(tmp_path, demo_frame, dates, "applied_on"), schema, min_rows=50)
    with pytest.raises(DataValidationError) as info:
        hold_out_latest(ds, schema, 0.2, 50, 10, 50)
    text = str(info.value)
    assert "timed.csv" in text and "column 'applied_on': not a date" in text and "rows 4, 8" in text
    assert "'yesterday'" in text


def test_a_slice_too_small_or_no_slice_at_all_is_a_data_error(tmp_path, demo_frame, schema_path):
    schema = _contract(schema_path, {"name": "applied_day", "type": "integer"}, "applied_day")
    same = load_dataset(_with_time(tmp_path, demo_frame, np.full(len(demo_frame), 7)), schema, min_rows=50)
    with pytest.raises(DataValidationError, match="column 'applied_day': no recent slice: every row is at or after 7"):
        hold_out_latest(same, schema, 0.2, 50, 10, 50)
    days = np.arange(len(demo_frame))
    ds = load_dataset(_with_time(tmp_path, demo_frame, days), schema, min_rows=50)
    with pytest.raises(DataValidationError, match=r"too few rows: 90 held-out rows \(at or after 810\), at least 200"):
        hold_out_latest(ds, schema, 0.1, 50, 10, 200)


def test_subset_keeps_the_order_it_is_given(demo_csv, schema_path):
    schema = _contract(schema_path, None, None)
    ds = load_dataset(demo_csv, schema, min_rows=50)
    part = subset(ds, np.array([5, 2, 9]))
    assert part.n_rows == 3 and np.array_equal(part.y, ds.y[[5, 2, 9]])
    assert np.array_equal(part.columns["age"], ds.columns["age"][[5, 2, 9]])


@pytest.mark.parametrize("column, time_column, message", [
    (None, "age_at", "time_column 'age_at' is not one of the columns"),
    (None, "default", "time_column 'default' is not one of the columns"),
    (None, "has_mortgage", "time_column 'has_mortgage' is boolean"),
    (None, "employment_years", "time_column 'employment_years' is nullable"),
])
def test_the_contract_refuses_a_time_column_it_cannot_order_by(schema_path, column, time_column, message):
    with pytest.raises(ContractError, match=message):
        _contract(schema_path, column, time_column)


def test_a_schema_without_time_column_keeps_its_hash(schema_path):
    data = yaml.safe_load(schema_path.read_text())
    schema = schema_from_dict(data)
    assert schema.time_column is None
    assert schema.digest() == canonical_digest({**data | {"version": schema.version},
                                                "columns": [c.contract() for c in schema.columns]})
    timed = schema_from_dict({**data, "time_column": "age"})
    assert timed.digest() != schema.digest()
