import pytest

from serving.contract.schema import FeatureList, FeatureSpec, feature_schema_hash, schema_from_dict
from tasks.registry import PriorRelease
from tasks.release.versioning import next_release, parse_release

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("prior, same_schema, expected", [
    (None, True, "1.0.0"),
    ("1.0.0", True, "1.1.0"),
    ("1.4.2", True, "1.5.0"),
    ("1.4.2", False, "2.0.0"),
])
def test_release_rules(prior, same_schema, expected):
    before = PriorRelease(prior, "h1") if prior else None
    assert next_release(before, "h1" if same_schema else "h2") == expected


def test_bad_release_text():
    with pytest.raises(ValueError, match="MAJOR.MINOR.PATCH"):
        parse_release("v1.2")


def _schema(**age):
    return schema_from_dict({"target": {"name": "y", "positive_label": "1"},
                             "columns": [{"name": "age", "type": "integer", **age},
                                         {"name": "note", "type": "categorical", "categories": ["a"]}]})


def test_feature_schema_hash_tracks_the_model_inputs_only():
    features = FeatureList(features=(FeatureSpec(name="age", preprocessing="standardize"),))
    base = feature_schema_hash(_schema(min=0), features)
    assert feature_schema_hash(_schema(min=0), features) == base
    assert feature_schema_hash(_schema(min=18), features) != base           # the contract changed
    assert feature_schema_hash(_schema(min=0, description="years"), features) == base  # docs only
    other = FeatureList(features=(FeatureSpec(name="age", preprocessing="log_standardize"),))
    assert feature_schema_hash(_schema(min=0), other) == base               # preprocessing is not the contract
