import pytest

from serving.contract.errors import ContractError
from serving.contract.schema import ColumnSpec, FeatureList, FeatureSpec, Schema, schema_from_dict

pytestmark = pytest.mark.unit


def _schema(**over):
    base = {"target": {"name": "y", "positive_label": "1"},
            "columns": [{"name": "a", "type": "numeric", "nullable": True, "min": 0, "max": 10},
                        {"name": "c", "type": "categorical", "categories": ["x", "y"]}]}
    base.update(over)
    return base


@pytest.mark.parametrize("column, message", [
    ({"name": "c", "type": "categorical"}, "needs a non-empty 'categories'"),
    ({"name": "c", "type": "categorical", "categories": ["x", "x"]}, "lists a category twice"),
    ({"name": "c", "type": "categorical", "categories": ["x", " "]}, "may not be empty"),
    ({"name": "n", "type": "numeric", "min": 5, "max": 1}, "min 5.0 is above max 1.0"),
    ({"name": "b", "type": "boolean", "min": 0}, "only numeric and integer columns take min/max"),
    ({"name": "n", "type": "numeric", "categories": ["x"]}, "only categorical columns take 'categories'"),
    ({"name": "n", "type": "float"}, "columns.0.type"),
])
def test_bad_columns_are_named(column, message):
    with pytest.raises(ContractError, match=message):
        schema_from_dict(_schema(columns=[column]), "s.yaml")


def test_target_may_not_be_a_column():
    with pytest.raises(ContractError, match="must not also be listed"):
        schema_from_dict(_schema(columns=[{"name": "y", "type": "numeric"}]))


@pytest.mark.parametrize("feature, message", [
    (FeatureSpec(name="zz", preprocessing="standardize"), "not a column of the schema"),
    (FeatureSpec(name="a", preprocessing="one_hot", imputation="median"), "preprocessing must be one of"),
    (FeatureSpec(name="a", preprocessing="standardize"), "nullable in the schema, so it needs an imputation"),
    (FeatureSpec(name="c", preprocessing="one_hot", imputation="median"), "imputation must be one of"),
    (FeatureSpec(name="y", preprocessing="standardize"), "is the target column"),
])
def test_feature_list_is_checked_against_schema(feature, message):
    schema = Schema.model_validate(_schema())
    with pytest.raises(ContractError, match=message):
        FeatureList(features=(feature,)).check_against(schema)


def test_column_spec_is_immutable():
    col = ColumnSpec(name="a", type="numeric")
    with pytest.raises(Exception):
        col.name = "b"


def test_features_that_collide_as_tensor_names_are_refused():
    schema = Schema.model_validate(_schema(columns=[{"name": "a b", "type": "numeric"},
                                                    {"name": "a_b", "type": "numeric"}]))
    fl = FeatureList(features=(FeatureSpec(name="a b", preprocessing="standardize"),
                               FeatureSpec(name="a_b", preprocessing="standardize")))
    with pytest.raises(ContractError, match="both map to the model input 'a_b'"):
        fl.check_against(schema)


def _soft(**extra):
    from serving.contract.schema import ColumnSpec

    return ColumnSpec(name="age", type="integer", min=20, max=68, bounds="soft", hard_min=0, **extra)


def test_soft_bounds_describe_hard_bounds_refuse():
    import numpy as np

    from serving.contract.schema import check_column

    spec = _soft()
    values = np.array([70.0, 19.0, 40.0, -1.0])
    null = np.zeros(4, dtype=bool)
    problems = check_column(spec, values, null)
    assert [(p.issue, p.rows) for p in problems] == [("out of range", (4,))]       # only age < 0
    assert "[0, inf]" in problems[0].detail
    assert spec.outside_soft_bounds(values, null) == 3                             # 70, 19 and -1 are drift


def test_soft_categories_let_unknown_values_through_and_count_them():
    import numpy as np

    from serving.contract.schema import ColumnSpec, check_column

    spec = ColumnSpec(name="region", type="categorical", categories=("north", "south"), bounds="soft", nullable=True)
    values = np.array(["north", "mars", ""], dtype=object)
    null = np.array([False, False, True])
    assert check_column(spec, values, null) == []
    assert spec.outside_soft_bounds(values, null) == 1


def test_contracts_written_before_soft_bounds_keep_their_hashes():
    """A schema that does not use the new fields digests exactly as before they existed."""
    from serving.contract.schema import (
        ColumnSpec,
        FeatureList,
        FeatureSpec,
        Schema,
        canonical_digest,
        feature_schema_hash,
    )

    col = ColumnSpec(name="age", type="integer", min=18, max=100)
    schema = Schema(target={"name": "y", "positive_label": "1"}, columns=(col,))
    old_columns = [{"name": "age", "type": "integer", "nullable": False, "min": 18.0, "max": 100.0,
                    "categories": None, "description": None}]
    assert schema.digest() == canonical_digest({"version": 1, "target": {"name": "y", "positive_label": "1"},
                                                "columns": old_columns})
    features = FeatureList(features=(FeatureSpec(name="age", preprocessing="standardize"),))
    assert feature_schema_hash(schema, features) == canonical_digest(
        [{k: v for k, v in old_columns[0].items() if k != "description"}])
    soft = Schema(target=schema.target, columns=(col.model_copy(update={"bounds": "soft"}),))
    assert feature_schema_hash(soft, features) != feature_schema_hash(schema, features)
