"""The release flow for real: Prefect server, SQLite MLflow registry, TensorFlow on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, mlflow_client

pytestmark = pytest.mark.integration


@pytest.fixture
def env_home(home, monkeypatch):
    monkeypatch.setenv("PIPELINE_HOME", str(home))
    return home


def _release(demo_csv, schema_path, feature_list_path, fast_config):
    from flows.release import release_flow

    return release_flow(data=str(demo_csv), schema=str(schema_path), feature_list=str(feature_list_path),
                        config=str(fast_config))


def test_release_flow_end_to_end(prefect_server, env_home, demo_csv, schema_path, feature_list_path,
                                 fast_config, tmp_path):
    import mlflow

    first = _release(demo_csv, schema_path, feature_list_path, fast_config)
    assert first["version"] == "1" and first["release"] == "1.0.0"
    assert first["model_dir"] == str(env_home / "models" / "test-model" / "1")
    assert first["registry"]["name"] == "test-model" and first["registry"]["version"] == "1"
    assert set(first["cv_metrics"]) >= {"roc_auc", "pr_auc", "brier", "ece"}
    calibration = first["calibration"]      # auto: every candidate measured, one chosen and shipped
    assert calibration["requested"] == "auto" and set(calibration["candidates"]) == {"none", "sigmoid", "beta",
                                                                                     "isotonic"}
    assert calibration["method"] in calibration["candidates"] and calibration["reason"].startswith("auto: ")
    assert first["gate"] == {"passed": True, "reasons": [], "champion_version": None, "comparison": {}, "notes": []}
    assert first["evaluation"] is None                      # no --eval-data, no time column
    assert all(first["timings"][s] > 0 for s in ("validate", "train", "calibrate", "export", "register"))

    client, uri = mlflow_client(env_home)
    mv = client.get_model_version("test-model", "1")
    assert mv.tags["release"] == "1.0.0" and mv.tags["blessed"] == "true"
    assert mv.tags["model_dir"] == first["model_dir"] and json.loads(mv.tags["gate_reasons"]) == []
    assert str(client.get_model_version_by_alias("test-model", "challenger").version) == "1"
    assert mv.current_stage in (None, "None")                       # aliases, never stages
    run = client.get_run(mv.run_id)
    assert run.data.metrics["cv_roc_auc"] == pytest.approx(first["cv_metrics"]["roc_auc"])
    assert "ece_before" in run.data.metrics and "training.cv_folds" in run.data.params
    assert run.data.params["calibration.requested"] == "auto"
    assert run.data.params["calibration.method"] == calibration["method"]
    assert all(f"calibration_{name}_brier" in run.data.metrics for name in calibration["candidates"])
    artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"calibration", "export"} <= artifacts
    assert [a.path for a in client.list_artifacts(mv.run_id, "export")] == ["export/metadata.json"]
    # Nothing escapes the pipeline home.
    assert not (ROOT / "mlruns").exists()

    # The registered pyfunc returns calibrated probabilities: the export's golden ones.
    meta = json.loads((env_home / "models" / "test-model" / "1" / "metadata.json").read_text())
    assert meta["calibrator_method"] == calibration["method"] == meta["calibration"]["method"]
    assert meta["calibration"]["candidates"] == calibration["candidates"]
    # Lineage a person can follow back: the code's commit beside the data's SHA-256, on the run too.
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert meta["lineage"]["code_commit"] == head == mv.tags["code_commit"] and len(head) == 40
    assert client.get_run(mv.run_id).data.tags["code_commit"] == head and meta["lineage"]["data_sha256"]
    assert mv.tags["code_dirty"] in ("True", "False")
    from tasks.registry import tracking_uri

    with tracking_uri(uri):
        model = mlflow.pyfunc.load_model("models:/test-model/1")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    golden = meta["golden_examples"]
    frame = pd.DataFrame([g["features"] for g in golden])
    for col in ("income", "employment_years"):   # nullable: None becomes NaN
        frame[col] = frame[col].astype("float64")
    predicted = np.asarray(model.predict(frame))
    assert np.max(np.abs(predicted - [g["probability"] for g in golden])) <= 1e-6
    assert model.metadata.signature is not None

    # With a champion, the next release is compared against it and counts MINOR up.
    client.set_registered_model_alias("test-model", "champion", "1")
    second = _release(demo_csv, schema_path, feature_list_path, fast_config)
    assert second["version"] == "2" and second["release"] == "1.1.0"
    assert second["gate"]["champion_version"] == "1"
    assert set(second["gate"]["comparison"]["metrics"]) == {"roc_auc", "pr_auc_lift", "brier_skill", "ece_relative"}
    assert second["gate"]["comparison"]["basis"] == "cross-validation"   # no rows to score both on: flagged
    assert "not on the same rows" in second["gate"]["notes"][0]
    assert client.get_model_version("test-model", "2").tags["previous_release"] == "1.0.0"

    # A changed feature contract is a MAJOR release.
    schema = yaml.safe_load(schema_path.read_text())
    schema["columns"][0]["max"] = 120
    changed = tmp_path / "schema.yaml"
    changed.write_text(yaml.safe_dump(schema))
    third = _release(demo_csv, changed, feature_list_path, fast_config)
    assert third["release"] == "2.0.0" and third["version"] == "3"

    # Another pipeline home in the same process starts from nothing: homes never interfere. This release
    # also searches over network sizes (one candidate): the choice is recorded beside the metrics.
    other = tmp_path / "other-home"
    os.environ["PIPELINE_HOME"] = str(other)
    searching = tmp_path / "search.yaml"
    config = yaml.safe_load(fast_config.read_text())
    config["training"]["search"] = {"enabled": True, "budget_s": None, "candidates": [{"hidden_units": [8]}]}
    searching.write_text(yaml.safe_dump(config))
    fresh = _release(demo_csv, schema_path, feature_list_path, searching)
    assert fresh["version"] == "1" and fresh["release"] == "1.0.0" and fresh["registry"]["version"] == "1"
    assert fresh["model_dir"].startswith(str(other))
    search = fresh["search"]
    assert [c["changes"] for c in search["candidates"]] == [{}, {"hidden_units": [8]}]
    assert all(c["val_loss"] > 0 for c in search["candidates"]) and search["chosen"] in (0, 1)
    meta = json.loads((other / "models" / "test-model" / "1" / "metadata.json").read_text())
    assert meta["training"]["search"] == search
    assert meta["training"]["params"]["hidden_units"] == [[16], [8]][search["chosen"]]
    client, _uri = mlflow_client(other)
    run = client.get_run(client.get_model_version("test-model", "1").run_id)
    assert run.data.params["search.chosen"] == str(search["chosen"])
    assert run.data.metrics["search_1_val_loss"] == pytest.approx(search["candidates"][1]["val_loss"])


def _cli(args, home, timeout=600):
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_HOME", None)   # the CLI must default it under the pipeline home
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_commands_without_loading_tensorflow():
    out = subprocess.run([sys.executable, "-c", "import sys; from flows.cli import main\n"
                          "try:\n  main(['--help'])\nexcept SystemExit: pass\n"
                          "print('TF' if 'tensorflow' in sys.modules else 'noTF')"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "infer-schema" in out.stdout and "release" in out.stdout
    assert out.stdout.strip().endswith("noTF")


def test_bad_data_is_refused_with_a_clear_message_and_touches_nothing(tmp_path, demo_frame, schema_path,
                                                                       feature_list_path, home):
    bad = demo_frame.copy().astype({"age": object})
    bad.loc[2, "age"] = "old"
    bad.loc[4, "region"] = "mars"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    result = _cli(["release", "--data", str(path), "--schema", str(schema_path), "--feature-list",
                   str(feature_list_path)], home)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "bad.csv" in result.stderr and "column 'age': wrong type" in result.stderr and "rows 3" in result.stderr
    assert "column 'region': unknown category" in result.stderr and "'mars'" in result.stderr
    assert not (home / "mlflow").exists() and not (home / "models").exists()


def test_a_release_that_fails_before_registration_still_reports_where_and_why(prefect_server, env_home, tmp_path,
                                                                             demo_frame, schema_path,
                                                                             feature_list_path, fast_config):
    """A scheduled run that fails on its data leaves a release report in the UI naming the stage, file,
    column and rows, and nothing in the registry."""
    from flows.release import release_flow
    from tasks.errors import DataValidationError
    from tests.flows.conftest import artifacts

    bad = demo_frame.copy().astype({"age": object})
    bad.loc[2, "age"] = "old"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    before = len(artifacts("release-report-test-model"))
    with pytest.raises(DataValidationError):
        release_flow(data=str(path), schema=str(schema_path), feature_list=str(feature_list_path),
                     config=str(fast_config))
    found = artifacts("release-report-test-model")
    assert len(found) == before + 1
    report = found[0].data
    assert report.startswith("# Release of test-model FAILED at validate")
    assert "bad.csv" in report and "column 'age': wrong type" in report and "rows 3" in report
    assert "nothing was registered, deployed or promoted" in report
    assert not (env_home / "mlflow").exists() and not (env_home / "models").exists()


def test_bad_config_names_the_key(tmp_path, demo_csv, schema_path, feature_list_path, home):
    config = tmp_path / "pipeline.yaml"
    config.write_text("calibration:\n  method: platypus\n")
    result = _cli(["release", "--data", str(demo_csv), "--schema", str(schema_path), "--feature-list",
                   str(feature_list_path), "--config", str(config)], home)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "calibration.method" in result.stderr


def test_cli_gate_failure_exits_3_and_records_the_verdict(tmp_path, demo_csv, schema_path, feature_list_path,
                                                         fast_config, home):
    config = yaml.safe_load(fast_config.read_text())
    config["gate"]["bounds"]["roc_auc"] = {"min": 0.999}
    config["gate"]["bounds"]["ece"] = {"max": 0.0001}
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(config))
    summary_path = tmp_path / "out" / "summary.json"
    result = _cli(["release", "--data", str(demo_csv), "--schema", str(schema_path), "--feature-list",
                   str(feature_list_path), "--config", str(strict), "--json-out", str(summary_path)], home)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "quality gate: FAILED" in result.stderr and "roc_auc" in result.stderr and "ece" in result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["gate"]["passed"] is False and len(summary["gate"]["reasons"]) == 2
    for key in ("version", "release", "model_dir", "registry", "cv_metrics", "calibration"):
        assert key in summary
    client, _ = mlflow_client(home)
    mv = client.get_model_version("test-model", summary["registry"]["version"])
    assert mv.tags["blessed"] == "false" and len(json.loads(mv.tags["gate_reasons"])) == 2
    from mlflow.exceptions import MlflowException
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("test-model", "challenger")
    # The release recorded its config on the model: later commands need no --config (the only model, its config).
    assert client.get_registered_model("test-model").tags["pipeline_config"] == str(strict.resolve())
    status = _cli(["status"], home)
    assert status.returncode == 0 and "registry: test-model champion = version none" in status.stdout, status.stderr
    missing = _cli(["deploy", "--version", "7"], home)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: MLflow at sqlite:///{home / 'mlflow' / 'mlflow.db'}: 'test-model' has no version 7; its versions: 1"]
    # Prefect kept its state under the pipeline home.
    assert (home / "prefect").exists()


def test_infer_schema_cli(tmp_path, demo_csv, home):
    out = tmp_path / "contract"
    result = _cli(["infer-schema", "--data", str(demo_csv), "--target", "default", "--positive", "1",
                   "--out", str(out)], home)
    assert result.returncode == 0, result.stderr
    assert (out / "schema.yaml").exists() and (out / "feature_list.csv").exists()
    # The model is named after its data (not every model "credit-risk"), or as --name says.
    assert yaml.safe_load((out / "pipeline.yaml").read_text()) == {"model_name": "demo"} and "'demo'" in result.stdout
    again = _cli(["infer-schema", "--data", str(demo_csv), "--target", "default", "--positive", "1",
                  "--out", str(out)], home)
    assert again.returncode == 2 and "--force" in again.stderr
    named = _cli(["infer-schema", "--data", str(demo_csv), "--target", "default", "--positive", "1",
                  "--out", str(out), "--force", "--name", "loans.eu"], home)
    assert named.returncode == 0 and yaml.safe_load((out / "pipeline.yaml").read_text())["model_name"] == "loans.eu"
    bad = _cli(["infer-schema", "--data", str(demo_csv), "--target", "default", "--positive", "1",
                "--out", str(out), "--force", "--name", "../x"], home)
    assert bad.returncode == 2 and "--name '../x'" in bad.stderr
    check = _cli(["validate", "--data", str(demo_csv), "--schema", str(out / "schema.yaml"), "--feature-list",
                  str(out / "feature_list.csv")], home)
    assert check.returncode == 0 and "conforms" in check.stdout


@pytest.mark.parametrize("broken", ["config", "schema", "feature_list", "data_is_a_directory"])
def test_unreadable_inputs_exit_2_naming_the_file(tmp_path, demo_csv, schema_path, feature_list_path, home, broken):
    binary = tmp_path / f"{broken}.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    args = {"--data": str(demo_csv), "--schema": str(schema_path), "--feature-list": str(feature_list_path),
            "--config": None}
    named = {"config": "--config", "schema": "--schema", "feature_list": "--feature-list"}
    if broken == "data_is_a_directory":
        args["--data"] = str(tmp_path)
        culprit = str(tmp_path)
    else:
        args[named[broken]] = str(binary)
        culprit = str(binary)
    result = _cli(["validate", *[x for k, v in args.items() if v is not None for x in (k, v)]], home)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and culprit in result.stderr


@pytest.mark.faults
def test_two_releases_at_once_get_distinct_versions_and_release_numbers(prefect_server, home, demo_csv, schema_path,
                                                                         feature_list_path, fast_config, tmp_path):
    """Two `python -m flows release` started together on one PIPELINE_HOME (both read "no release yet" before
    either registers) get distinct registry versions and release numbers; each export directory is named by
    its registry version, complete, and nothing is left half written."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PIPELINE_HOME": str(home), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("MLFLOW_TRACKING_URI", None)
    logs = [tmp_path / f"release-{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "flows", "release", "--data", str(demo_csv), "--schema",
                               str(schema_path), "--feature-list", str(feature_list_path), "--config",
                               str(fast_config), "--no-deploy", "--json-out", str(tmp_path / f"release-{i}.json")],
                              cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
             for i, log in enumerate(logs)]
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    summaries = [json.loads((tmp_path / f"release-{i}.json").read_text()) for i in range(2)]

    assert sorted(s["registry"]["version"] for s in summaries) == ["1", "2"]
    assert sorted(s["release"] for s in summaries) == ["1.0.0", "1.1.0"]
    for s in summaries:   # one identity: the export directory and the served version are the registry version
        assert s["version"] == s["registry"]["version"]
        assert s["model_dir"] == str(home / "models" / "test-model" / s["version"])
    models = home / "models" / "test-model"
    assert sorted(p.name for p in models.iterdir()) == ["1", "2"]          # no staging folder left behind
    client, _ = mlflow_client(home)
    for mv in client.search_model_versions("name = 'test-model'"):
        meta = json.loads((models / str(mv.version) / "metadata.json").read_text())
        assert meta["version"] == str(mv.version) and meta["release"] == mv.tags["release"]
        assert mv.tags["release_status"] == "registered" and mv.tags["export_version"] == str(mv.version)
        assert mv.tags["model_dir"] == str(models / str(mv.version))
    later = client.get_model_version("test-model", "2")
    assert later.tags["previous_release"] == client.get_model_version("test-model", "1").tags["release"]


def test_an_unreachable_registry_fails_the_release_before_training(prefect_server, env_home, demo_csv, schema_path,
                                                                  feature_list_path, fast_config, monkeypatch):
    """A registry that cannot be reached is not "no champion": the run stops with an error naming the registry
    (without credentials) and the step, before any training, and the gate never runs without its champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from flows.release import release_flow
    from tasks.errors import RegistryError
    from tests.flows.conftest import artifacts

    server = "http://pipeline:S3cret@127.0.0.1:9"

    def unreachable(self, name, alias):
        raise MlflowException(f"API request to {server}/api/2.0/mlflow/registered-models/alias failed with "
                              "exception HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", unreachable)
    trained = []
    monkeypatch.setattr("flows.stages.train", lambda *a, **k: trained.append(1))
    with pytest.raises(RegistryError) as failure:
        release_flow(data=str(demo_csv), schema=str(schema_path), feature_list=str(feature_list_path),
                     config=str(fast_config))
    text = str(failure.value)
    assert "reading alias 'champion' of 'test-model' failed" in text and "did not answer" in text
    assert "mlflow.db" in text and "http://127.0.0.1:9" in text and "S3cret" not in text
    assert trained == []
    report = artifacts("release-report-test-model")[0].data
    assert report.startswith("# Release of test-model FAILED at champion") and "S3cret" not in report
    assert "nothing was registered, deployed or promoted" in report


@pytest.mark.faults
def test_a_release_killed_mid_way_leaves_nothing_half_written_and_moves_no_alias(
        prefect_server, home, demo_csv, schema_path, feature_list_path, fast_config, tmp_path, figure):
    """`kill -9` of a release while it exports: no version directory that does not verify, no alias moved,
    and the next release gets a new version and release number (the killed one is never a candidate)."""
    from prefect.settings import PREFECT_API_URL

    from serving.contract.metadata import read_metadata, verify_files, verify_metadata
    from tests.faults.conftest import wait_until

    env = {**os.environ, "PIPELINE_HOME": str(home), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [sys.executable, "-m", "flows", "release", "--data", str(demo_csv), "--schema", str(schema_path),
            "--feature-list", str(feature_list_path), "--config", str(fast_config)]
    models = home / "models" / "test-model"
    log = tmp_path / "killed.log"
    proc = subprocess.Popen([*args, "--no-deploy"], cwd=ROOT, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    try:
        # Training is done and the version reserved once the export starts writing under models/.
        wait_until(lambda: proc.poll() is not None or (models.exists() and any(models.iterdir())), 600,
                   "the export to start", interval=0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.kill()
    finally:
        proc.wait(timeout=60)
    seen = sorted(p.name for p in models.iterdir())
    for entry in models.iterdir():       # a numbered directory is a whole export; anything else is hidden staging
        if entry.name.isdigit():
            verify_files(entry, read_metadata(entry))
            verify_metadata(entry, read_metadata(entry))
        else:
            assert entry.name.startswith("."), seen
    client, _ = mlflow_client(home)
    killed = client.search_model_versions("name = 'test-model'")
    assert all(not mv.aliases for mv in killed)
    assert all(mv.tags.get("release_status") != "registered" for mv in killed), [mv.tags for mv in killed]

    out = subprocess.run([*args, "--no-deploy", "--json-out", str(tmp_path / "next.json")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads((tmp_path / "next.json").read_text())
    burned = {mv.version for mv in killed}
    assert summary["registry"]["version"] not in burned
    assert summary["release"] not in {mv.tags.get("release") for mv in killed}
    figure("entries_at_kill", len(seen), "entries", f"under models/test-model/ when killed: {seen}")
    figure("versions_burned", len(burned), "versions", "reserved by the killed run, never deployable")



def _shipped_metrics(model_dir, ds) -> dict:
    """The metrics of an export, loaded as a server loads it, on ``ds``: what the gate must have measured."""
    from serving.contract.model import LoadedModel
    from tasks.metrics import binary_metrics

    model = LoadedModel.load(model_dir)
    _, p = model.score_columns({i.name: ds.columns[i.name] for i in model.metadata.inputs})
    return binary_metrics(ds.y, p)


def test_the_gate_scores_champion_and_candidate_on_the_same_rows(prefect_server, env_home, tmp_path, demo_frame,
                                                                 schema_path, feature_list_path):
    """A time column: the newest rows are held out of training and the shipped model is measured on them.
    --eval-data (it wins over the time column): both shipped models score the same file, paired."""
    from flows.release import release_flow
    from tasks.contract_files import load_schema
    from tasks.training.data import load_dataset, subset
    from tests.conftest import FAST_CONFIG
    from tests.flows.conftest import artifacts

    config = tmp_path / "pipeline.yaml"
    config.write_text(FAST_CONFIG.replace("  cv_folds: 3\n  epochs: 12", "  cv_folds: 2\n  epochs: 8")
                      + "  min_eval_rows: 50\n  bootstrap_resamples: 300\n")
    days = np.random.default_rng(5).integers(0, 300, size=len(demo_frame))
    timed = demo_frame.assign(applied_day=days)
    data, held, schema = tmp_path / "timed.csv", tmp_path / "eval.csv", tmp_path / "timed-schema.yaml"
    timed.to_csv(data, index=False)
    timed.iloc[700:].to_csv(held, index=False)
    contract = yaml.safe_load(schema_path.read_text())
    contract["columns"].append({"name": "applied_day", "type": "integer", "min": 0})
    contract["time_column"] = "applied_day"
    schema.write_text(yaml.safe_dump(contract))

    def release(eval_data=None):
        return release_flow(data=str(data), schema=str(schema), feature_list=str(feature_list_path),
                            config=str(config), eval_data=str(eval_data) if eval_data else None)

    first = release()
    rows = first["evaluation"]["rows"]
    cutoff = int(rows["detail"].split("at or after ")[1].split(" ")[0])
    newest = days >= cutoff
    assert rows["origin"] == "time-holdout" and rows["n_rows"] == newest.sum()
    assert abs(newest.mean() - 0.2) < 0.02 and days[~newest].max() < cutoff      # the most recent fifth
    assert first["data"]["rows"] == 900 and first["data"]["training_rows"] == 900 - newest.sum()
    client, _ = mlflow_client(env_home)
    assert client.get_run(first["registry"]["run_id"]).data.params["data_rows"] == str(900 - newest.sum())
    full = load_dataset(data, load_schema(schema), min_rows=50)
    assert first["evaluation"]["metrics"] == pytest.approx(_shipped_metrics(first["model_dir"], subset(full, newest)))
    assert first["gate"]["comparison"] == {}                   # no champion yet

    client.set_registered_model_alias("test-model", "champion", "1")
    second = release(eval_data=held)
    comp = second["gate"]["comparison"]
    assert comp["basis"] == "same rows" and comp["like_for_like"] and comp["rows"] == second["evaluation"]["rows"]
    assert comp["rows"]["origin"] == "eval-data" and comp["rows"]["source"] == str(held)
    assert comp["rows"]["n_rows"] == 200 and comp["resamples"] == 300
    assert second["data"]["training_rows"] == 900                # --eval-data: nothing held out of training
    eval_ds = load_dataset(held, load_schema(schema), min_rows=50)
    champion_on_rows = _shipped_metrics(first["model_dir"], eval_ds)
    for metric, m in comp["metrics"].items():
        assert m["champion"] == pytest.approx(champion_on_rows[metric])
        assert m["candidate"] == pytest.approx(second["evaluation"]["metrics"][metric])
        assert m["difference"] == pytest.approx(m["candidate"] - m["champion"])
        assert m["interval"][0] <= m["interval"][1] and m["verdict"] in ("ok", "cannot tell", "REGRESSION")
    assert second["evaluation"]["metrics"] == pytest.approx(_shipped_metrics(second["model_dir"], eval_ds))
    assert second["gate"]["passed"] == all(m["verdict"] != "REGRESSION" for m in comp["metrics"].values())
    report = artifacts("release-report-test-model")[0].data
    assert "## Champion version 1 vs candidate on the same rows" in report and "200 rows" in report
    assert "## The shipped model on rows it was not trained on" in report
    tags = client.get_model_version("test-model", "2").tags
    assert json.loads(tags["gate_comparison"])["basis"] == "same rows"
    assert json.loads(tags["eval_metrics"]) == pytest.approx(second["evaluation"]["metrics"])


def test_bad_eval_data_is_refused_naming_file_row_and_column(tmp_path, demo_frame, schema_path, feature_list_path,
                                                            demo_csv, home):
    bad = demo_frame.iloc[:200].copy().astype({"age": object})
    bad.loc[4, "age"] = "old"
    path = tmp_path / "holdout.csv"
    bad.to_csv(path, index=False)
    result = _cli(["release", "--data", str(demo_csv), "--schema", str(schema_path), "--feature-list",
                   str(feature_list_path), "--eval-data", str(path)], home)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holdout.csv" in result.stderr and "column 'age': wrong type" in result.stderr and "rows 5" in result.stderr
    assert not (home / "mlflow").exists()
