"""JSON rows to model inputs: the shortcut for conforming columns finds exactly what the full checks find."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import serving.contract.inputs as inputs
from serving.contract.inputs import read_json_rows
from serving.contract.schema import ColumnSpec, check_column

pytestmark = pytest.mark.unit

SPECS = {
    "age": ColumnSpec(name="age", type="integer", min=18, max=100),
    "income": ColumnSpec(name="income", type="numeric", nullable=True, min=0, max=5e6),
    "ratio": ColumnSpec(name="ratio", type="numeric", hard_min=0, min=0, max=10, bounds="soft"),
    "region": ColumnSpec(name="region", type="categorical", categories=("east", "north")),
    "purpose": ColumnSpec(name="purpose", type="categorical", categories=("car", "home"), bounds="soft"),
    "owner": ColumnSpec(name="owner", type="boolean"),
}
GOOD = {"age": 40, "income": 52000.5, "ratio": 0.3, "region": "east", "purpose": "car", "owner": True}


def full_checks(monkeypatch, rows, policy=frozenset()):
    """read_json_rows with the shortcut turned off: every column through every check, as before it existed."""
    with monkeypatch.context() as m:
        m.setattr(inputs, "conforms", lambda *a: False)
        return read_json_rows(SPECS, rows, policy)


def same(a, b) -> None:
    (cols_a, probs_a), (cols_b, probs_b) = a, b
    assert [p.to_dict() for p in probs_a] == [p.to_dict() for p in probs_b]
    assert cols_a.keys() == cols_b.keys()
    for name in cols_a:
        assert cols_a[name].dtype == cols_b[name].dtype
        assert list(cols_a[name]) == list(cols_b[name]) or np.allclose(cols_a[name], cols_b[name], equal_nan=True)


@pytest.mark.parametrize("feature, value, issue", [
    ("age", 17, "out of range"),
    ("age", 40.5, "not a whole number"),
    ("age", True, "wrong type"),
    ("age", "40", "wrong type"),
    ("age", None, "missing values"),
    ("income", -1, "out of range"),
    ("ratio", -0.5, "out of range"),          # hard_min holds under soft bounds
    ("region", "west", "unknown category"),
    ("region", "", "unknown category"),
    ("region", 3, "wrong type"),
    ("owner", 2, "wrong type"),
    ("owner", "maybe", "wrong type"),
])
def test_one_bad_row_among_many_is_named_by_row_column_and_value(monkeypatch, feature, value, issue):
    rows = [dict(GOOD) for _ in range(1000)]
    rows[737] = {**GOOD, feature: value}
    got = read_json_rows(SPECS, rows)
    same(got, full_checks(monkeypatch, rows))
    (problem,) = got[1]
    assert (problem.column, problem.issue, problem.count, problem.rows) == (feature, issue, 1, (737,))


def test_conforming_rows_and_soft_bounds_find_nothing(monkeypatch):
    rows = [dict(GOOD), {**GOOD, "ratio": 50.0, "purpose": "boat", "income": None, "owner": 0, "age": 18.0}]
    got = read_json_rows(SPECS, rows)
    same(got, full_checks(monkeypatch, rows))
    assert got[1] == []
    assert list(got[0]["purpose"]) == ["car", "boat"]


def test_a_missing_feature_is_still_named(monkeypatch):
    rows = [dict(GOOD), {k: v for k, v in GOOD.items() if k != "region"}]
    got = read_json_rows(SPECS, rows)
    same(got, full_checks(monkeypatch, rows))
    assert [(p.column, p.issue, p.rows) for p in got[1]] == [("region", "missing feature", (1,))]


def test_the_policy_still_lets_problems_through(monkeypatch):
    rows = [dict(GOOD), {**GOOD, "age": 120, "region": "west"}]
    policy = frozenset({"out of range", "unknown category"})
    got = read_json_rows(SPECS, rows, policy)
    same(got, full_checks(monkeypatch, rows, policy))
    assert got[1] == []


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(-20, 6e6, allow_nan=False),
                   st.sampled_from(["east", "north", "west", "car", "home", "", " east", "1"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({name: VALUES for name in SPECS}), min_size=1, max_size=6))
def test_the_shortcut_finds_exactly_what_every_check_finds(rows):
    with pytest.MonkeyPatch.context() as mp:
        same(read_json_rows(SPECS, rows), full_checks(mp, rows))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SPECS)), st.lists(VALUES, min_size=1, max_size=6))
def test_a_column_said_to_conform_passes_every_check(name, values):
    spec = SPECS[name]
    kinds = set(map(type, values))
    col = inputs.coerce_json_column(spec, values, kinds)
    if inputs.conforms(spec, values, kinds, col):
        assert not col.invalid.any()
        assert check_column(spec, col.values, col.null, shown=values, row_base=0) == []
