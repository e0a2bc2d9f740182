import pytest

from serving.schema import FeatureList, FeatureSpec, schema_from_dict
from tasks.versioning import PriorRelease, feature_schema_hash, next_release, parse_release


@pytest.mark.parametrize("prior, same_schema, change, expected", [
    (None, True, "retrain", "1.0.0"),
    ("1.0.0", True, "retrain", "1.1.0"),
    ("1.4.2", True, "retrain", "1.5.0"),
    ("1.4.2", True, "recalibrate", "1.4.3"),
    ("1.4.2", False, "retrain", "2.0.0"),
    ("1.4.2", False, "recalibrate", "2.0.0"),
])
def test_release_rules(prior, same_schema, change, expected):
    before = PriorRelease(prior, "h1") if prior else None
    assert next_release(before, "h1" if same_schema else "h2", change) == expected


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
