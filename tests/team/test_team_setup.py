"""The team setup (docs/how-to/team-setup.md), run for real: PostgreSQL (the Debian package `make test` installs) on
127.0.0.1; the Prefect server and the MLflow tracking server both on it, MLflow proxying artifacts to an
S3 bucket (moto); one release through them from the command line, as a user on another machine runs it:
PREFECT_API_URL and MLFLOW_TRACKING_URI only, no database password and no S3 credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from testkit.net import free_port
from tests.conftest import FAST_CONFIG, ROOT
from tests.team.stack import start_mlflow_server, start_postgres, start_prefect_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "team-mlflow"
MODEL = "test-model"            # FAST_CONFIG's model_name
# The tests' fast training and gate (bounds a useless model fails, which the demo data's releases pass): this
# test is about the servers, and a release must get to deploy and promote.
TEAM_CONFIG = yaml.safe_load(FAST_CONFIG)
RELEASE_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def postgres():
    try:
        pg = start_postgres()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    yield pg
    pg.stop()
    shutil.rmtree(pg.root, ignore_errors=True)


@pytest.fixture(scope="module")
def team(postgres, s3_endpoint, tmp_path_factory):
    """The Prefect server and the MLflow server on PostgreSQL, started side by side."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)   # the s3_endpoint fixture's dummy credentials
    s3.create_bucket(Bucket=BUCKET)
    s3_env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    s3_env["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    base = tmp_path_factory.mktemp("team")
    servers = []
    try:
        servers.append(start_prefect_server(postgres, base / "prefect-home"))
        servers.append(start_mlflow_server(postgres, f"s3://{BUCKET}/mlflow", s3_env, base / "mlflow"))
        prefect, mlflow = servers
        with ThreadPoolExecutor(2) as pool:   # both migrate their schema on first start: wait for them together
            waits = [pool.submit(prefect.wait_healthy, "/api/health", 150),
                     pool.submit(mlflow.wait_healthy, "/health", 150)]
            for w in waits:
                w.result()
        yield {"prefect": prefect, "mlflow": mlflow, "s3": s3, "s3_endpoint": s3_endpoint, "base": base}
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture(scope="module")
def released(team, postgres, demo_frame, tmp_path_factory):
    """`python -m flows release … --target t1` against the team servers; the served model is stopped at the end."""
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    work = tmp_path_factory.mktemp("release")
    home = work / "home"
    home.mkdir()
    data = work / "demo.csv"
    demo_frame.to_csv(data, index=False)
    config = work / "pipeline.yaml"
    config.write_text(yaml.safe_dump(TEAM_CONFIG))
    targets = work / "targets.yaml"
    targets.write_text(f"targets:\n  t1:\n    transport: local\n    base_dir: targets/t1\n    port: {free_port()}\n"
                       f"    start_timeout_s: 120\n")
    summary_file = work / "summary.json"

    # What a user's machine has: the two URLs. No database URL, no AWS credentials or profile.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_", "PIPELINE_"))}
    env.update(PIPELINE_HOME=str(home), PREFECT_API_URL=team["prefect"].url + "/api",
               MLFLOW_TRACKING_URI=team["mlflow"].url, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_CONFIG_FILE=os.devnull, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "flows", "release", "--data", str(data), "--schema", "configs/schema.yaml",
             "--feature-list", "configs/feature_list.csv", "--config", str(config), "--target", "t1",
             "--targets", str(targets), "--json-out", str(summary_file)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=RELEASE_TIMEOUT_S)
        yield {"proc": proc, "output": proc.stdout + proc.stderr,
               "summary": json.loads(summary_file.read_text()) if summary_file.exists() else None,
               "home": home, "data": data}
    finally:
        for target in load_targets(targets, home).values():
            transport_for(target).host("stop")


def _ok(released) -> dict:
    proc = released["proc"]
    assert proc.returncode == 0, f"release exited {proc.returncode}:\n{released['output'][-6000:]}"
    return released["summary"]


def test_one_release_through_the_team_servers(released):
    summary = _ok(released)
    assert summary["registry"]["version"] == "1" and summary["registry"]["alias"] == "champion"
    assert summary["gate"]["passed"]
    (dep,) = summary["deploy"]["deployments"]
    assert dep["target"] == "t1" and dep["smoke"]["passed"] and summary["deploy"]["champion_after"] == "1"


def test_the_prefect_server_recorded_the_runs_in_postgresql(released, team, postgres):
    _ok(released)
    api = team["prefect"].url + "/api"
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=10).json()}
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    by_flow = {}
    for run in runs:
        by_flow.setdefault(flows[run["flow_id"]], []).append(run)
    (rel,) = by_flow["release"]
    assert rel["name"] == f"release-{released['data']}" and rel["state_type"] == "COMPLETED"
    (dep,) = by_flow["deploy"]
    assert dep["state_type"] == "COMPLETED" and dep["parent_task_run_id"]
    parent = httpx.get(f"{api}/task_runs/{dep['parent_task_run_id']}", timeout=10).json()
    assert parent["flow_run_id"] == rel["id"]                   # the deploy flow ran as the release's subflow

    # Those rows are in the PostgreSQL database, not in a SQLite file somewhere.
    rows = postgres.sql("prefect", "SELECT name, state_type FROM flow_run ORDER BY name").splitlines()
    assert f"release-{released['data']}|COMPLETED" in rows and len(rows) == len(runs)
    assert not list(team["prefect"].log.parent.glob("*.db"))


def test_mlflow_registry_on_postgresql_and_artifacts_in_the_bucket(released, team, postgres):
    from mlflow import MlflowClient

    _ok(released)
    client = MlflowClient(tracking_uri=team["mlflow"].url, registry_uri=team["mlflow"].url)
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert str(mv.version) == "1"
    run = client.get_run(mv.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")   # proxied: clients never see the bucket
    assert postgres.sql("mlflow", "SELECT name, version FROM model_versions") == f"{MODEL}|1"
    assert postgres.sql("mlflow", "SELECT alias, version FROM registered_model_aliases") == "champion|1"

    keys = []
    for page in team["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert keys and all(k.startswith("mlflow/") for k in keys)
    assert any(k.endswith("/MLmodel") for k in keys), keys                  # the registered pyfunc model
    assert any(k.endswith(f"/{mv.run_id}/artifacts/export/metadata.json") for k in keys), keys
    assert any(k.endswith(f"/{mv.run_id}/artifacts/bundle/test-model-1.zip") for k in keys), keys
    # and nowhere else: no local mlruns/, mlartifacts/ or mlflow.db next to the server
    assert sorted(p.name for p in team["mlflow"].log.parent.iterdir()) == ["server.log"]


def test_no_secret_reaches_the_client_or_the_records(released, team, postgres):
    from mlflow import MlflowClient

    summary = _ok(released)
    secret = postgres.password
    assert secret not in released["output"] and secret not in json.dumps(summary)
    client = MlflowClient(tracking_uri=team["mlflow"].url, registry_uri=team["mlflow"].url)
    mv = client.get_model_version(MODEL, "1")
    run = client.get_run(mv.run_id)
    for values in (run.data.params, run.data.tags, mv.tags):
        assert values and not [k for k, v in values.items() if secret in str(v)]
    runs = httpx.post(team["prefect"].url + "/api/flow_runs/filter", json={}, timeout=10).json()
    assert secret not in json.dumps(runs)
    for path in released["home"].rglob("*"):   # nothing the client wrote holds it either
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
