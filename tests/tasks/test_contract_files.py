"""The contract's files on the pipeline side: schema.yaml and feature_list.csv, read and written."""

import pytest

from serving.contract.errors import ContractError
from serving.contract.schema import FeatureList, FeatureSpec, schema_from_dict
from tasks.contract_files import dump_feature_list, dump_schema, load_feature_list, load_schema
from tests.serving.contract.test_schema import _schema

pytestmark = pytest.mark.unit


def test_schema_round_trip_and_digest(tmp_path):
    schema = schema_from_dict(_schema())
    dump_schema(schema, tmp_path / "schema.yaml")
    again = load_schema(tmp_path / "schema.yaml")
    assert again == schema
    assert again.digest() == schema.digest()
    changed = schema_from_dict(_schema(columns=[{"name": "a", "type": "numeric", "nullable": False}]))
    assert changed.digest() != schema.digest()


def test_unreadable_schema_names_the_file(tmp_path):
    with pytest.raises(ContractError, match="nope.yaml: cannot read"):
        load_schema(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: [unclosed")
    with pytest.raises(ContractError, match="bad.yaml: not valid YAML"):
        load_schema(bad)


def test_feature_list_round_trip(tmp_path):
    fl = FeatureList(features=(FeatureSpec(name="a", preprocessing="log_standardize", imputation="median"),
                               FeatureSpec(name="c", preprocessing="embedding", embedding_dim=3)))
    dump_feature_list(fl, tmp_path / "f.csv")
    assert load_feature_list(tmp_path / "f.csv") == fl


def test_feature_list_row_errors_name_the_row(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("feature,preprocessing,imputation\na,standardize,median\nc,sparkle,none\n")
    with pytest.raises(ContractError, match=r"f.csv, row 2: preprocessing"):
        load_feature_list(path)
