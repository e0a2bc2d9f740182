"""Training data at s3://bucket/key, against moto's S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import boto3
import numpy as np
import pytest
import yaml

from serving.contract.digest import sha256_file
from tasks.contract_files import load_schema
from tasks.errors import DataValidationError
from tasks.training.data import infer_contract, load_dataset
from testkit.net import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-Never-In-A-Message-0123456789"


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, tmp_path, demo_frame):
    """A bucket holding the demo data as CSV and as Parquet; boto3 finds the endpoint in AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)    # moto takes any; no message may show it
    name = f"data-{tmp_path.name[-20:].lower().replace('_', '-')}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    typed = demo_frame.copy()
    typed["has_mortgage"] = typed["has_mortgage"] == "true"
    files = {"loans/Loans 2026.csv": tmp_path / "loans.csv", "loans/loans.parquet": tmp_path / "loans.parquet"}
    typed.to_csv(files["loans/Loans 2026.csv"], index=False)
    typed.to_parquet(files["loans/loans.parquet"], index=False)
    for key, path in files.items():
        client.upload_file(str(path), name, key)
    return {"name": name, "files": files, "endpoint": s3_endpoint, "client": client}


def test_s3_data_is_read_like_a_local_file(bucket, schema_path):
    schema = load_schema(schema_path)
    for key, local in bucket["files"].items():
        uri = f"s3://{bucket['name']}/{key}"
        remote, here = load_dataset(uri, schema, min_rows=50), load_dataset(local, schema, min_rows=50)
        assert remote.source == uri and remote.sha256 == sha256_file(local)   # lineage: the URI, the bytes
        np.testing.assert_array_equal(remote.y, here.y)
        for name in here.columns:
            np.testing.assert_array_equal(remote.columns[name], here.columns[name])
    schema_s3, features, _notes = infer_contract(f"s3://{bucket['name']}/loans/loans.parquet", "default", "1")
    assert schema_s3 == infer_contract(bucket["files"]["loans/loans.parquet"], "default", "1")[0]


def test_a_bad_row_in_s3_names_the_uri(bucket, schema_path, demo_frame, tmp_path):
    frame = demo_frame.astype({"age": object})
    frame.loc[41, "age"] = "forty"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    bucket["client"].upload_file(str(tmp_path / "bad.csv"), bucket["name"], "bad.csv")
    uri = f"s3://{bucket['name']}/bad.csv"
    with pytest.raises(DataValidationError) as info:
        load_dataset(uri, load_schema(schema_path), min_rows=50)
    assert str(info.value).startswith(f"{uri}: 1 problem(s)")
    assert "column 'age': wrong type: expected a whole number [rows 42; e.g. 'forty']" in str(info.value)


def test_s3_failures_name_the_uri_never_a_credential(bucket, schema_path, monkeypatch, caplog, tmp_path):
    schema = load_schema(schema_path)
    caplog.set_level(logging.DEBUG)

    def problem(uri):
        with pytest.raises(DataValidationError) as info:
            load_dataset(uri, schema)
        assert str(info.value).startswith(uri) and SECRET not in str(info.value)
        return info.value.problems[0]

    name = bucket["name"]
    assert problem(f"s3://no-such-{name}/x.csv").issue == "file not found"
    missing = problem(f"s3://{name}/loans/absent.csv")
    assert missing.issue == "file not found" and "no object 'loans/absent.csv'" in missing.detail
    assert problem(f"s3://{name}/loans/").issue == "not a file"
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")   # nothing listens there
    down = problem(f"s3://{name}/loans/loans.parquet")
    assert down.issue == "endpoint unreachable" and "127.0.0.1" in down.detail
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket["endpoint"])
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert problem(f"s3://{name}/loans/loans.parquet").issue == "no credentials"
    assert SECRET not in caplog.text


def _cli(args, home, endpoint):
    env = {**os.environ, "PIPELINE_HOME": str(home), "AWS_ENDPOINT_URL": endpoint}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_drafts_and_validates_from_s3(bucket, home, tmp_path):
    uri = f"s3://{bucket['name']}/loans/Loans 2026.csv"
    out = tmp_path / "contract"
    drafted = _cli(["infer-schema", "--data", uri, "--target", "default", "--positive", "1", "--out", str(out)],
                   home, bucket["endpoint"])
    assert drafted.returncode == 0, drafted.stderr
    assert yaml.safe_load((out / "pipeline.yaml").read_text()) == {"model_name": "loans-2026"}
    checked = _cli(["validate", "--data", uri, "--schema", str(out / "schema.yaml")], home, bucket["endpoint"])
    assert checked.returncode == 0 and f"{uri}: 900 rows" in checked.stdout, checked.stderr
    absent = _cli(["validate", "--data", uri + ".gone", "--schema", str(out / "schema.yaml")], home,
                  bucket["endpoint"])
    assert absent.returncode == 2 and "Traceback" not in absent.stderr
    assert f"{uri}.gone: 1 problem(s)" in absent.stderr and SECRET not in absent.stderr + absent.stdout


def test_release_trains_from_s3_and_records_the_uri(bucket, prefect_server, home, monkeypatch, schema_path,
                                                    feature_list_path, fast_config):
    from flows.release import release_flow

    monkeypatch.setenv("PIPELINE_HOME", str(home))
    uri = f"s3://{bucket['name']}/loans/loans.parquet"
    summary = release_flow(data=uri, schema=str(schema_path), feature_list=str(feature_list_path),
                           config=str(fast_config))
    digest = sha256_file(bucket["files"]["loans/loans.parquet"])
    assert summary["data"] == {"path": uri, "rows": 900, "positives": summary["data"]["positives"], "sha256": digest,
                               "training_rows": 900}
    lineage = json.loads((home / "models" / "test-model" / "1" / "metadata.json").read_text())["lineage"]
    assert lineage["data"] == uri and lineage["data_sha256"] == digest
