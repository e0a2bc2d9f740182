"""Recalibration end to end, for real: a release served on a local target, then two PATCH releases on its
network, one from a labels CSV and one from the labels its server collected through /feedback (the guide's
command), each gated on held-out labels, deployed, promoted and served."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, mlflow_client
from tests.flows.conftest import Steps, artifacts, host_status, scenario_home

pytestmark = pytest.mark.integration

SHIFT = 1.5   # labels drawn at sigmoid(logit(p) ± SHIFT): the served probabilities are miscalibrated


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _guide_command() -> str:
    """The guides' recalibration command (the ECE alarm's action), as written: every page that gives it, the same."""
    from tests.flows.test_guide_commands import documented_commands

    (line,) = {cmd for _doc, cmd in documented_commands() if cmd.startswith("python -m flows recalibrate --version")}
    return line


class Recalibrations(Steps):
    STEPS = ("release", "from_csv", "from_feedback")

    def __init__(self, env: dict, data, config) -> None:
        super().__init__()
        self.env, self.data, self.config = env, data, config
        self.client = mlflow_client(env["home"])[0]
        self.models = env["home"] / "models" / "test-model"

    def champion(self) -> str:
        return str(self.client.get_model_version_by_alias("test-model", "champion").version)

    def _release(self, patch):
        from flows.release import release_flow

        return release_flow(data=str(self.data), schema=str(ROOT / "configs" / "schema.yaml"),
                            feature_list=str(ROOT / "configs" / "feature_list.csv"), config=str(self.config),
                            targets=["t1"], targets_file=self.env["targets"])

    def _from_csv(self, patch):
        """Labels of 1,200 new rows drawn so the true rate is well above what version 1 predicts."""
        from flows.recalibrate import recalibrate_flow
        from serving.contract.model import LoadedModel
        from tasks.release.labels import labels_from_csv
        from testkit.demo import make_demo

        frame = make_demo(n_rows=1200, seed=21)
        path = self.env["home"].parent / "labels.csv"
        frame.to_csv(path, index=False)
        v1 = LoadedModel.load(self.models / "1")
        p = v1.calibrator(labels_from_csv(path, v1.metadata, v1).raw)
        frame["default"] = (np.random.default_rng(3).random(len(p)) < _sigmoid(_logit(p) + SHIFT)).astype(int)
        frame.to_csv(path, index=False)
        summary = recalibrate_flow(version="1", labels=str(path), targets=["t1"], targets_file=self.env["targets"],
                                   config=str(self.config))
        return {"summary": summary, "champion": self.champion(), "served": host_status(self.env)["default_version"],
                "report": artifacts("recalibration-report-test-model")[0].data, "labels": path}

    def _from_feedback(self, patch):
        """Traffic to t1 (version 2), labels sent back through /feedback, then the guide's command."""
        from prefect.settings import PREFECT_API_URL

        from tasks.contract_files import load_feature_list, load_schema
        from tasks.training.data import load_dataset
        from tasks.training.export import golden_rows
        from testkit.demo import make_demo

        schema = load_schema(ROOT / "configs" / "schema.yaml")
        path = self.env["home"].parent / "traffic.csv"
        make_demo(n_rows=1000, seed=22).to_csv(path, index=False)
        ds = load_dataset(path, schema, min_rows=1)
        rows = golden_rows(ds, schema, load_feature_list(ROOT / "configs" / "feature_list.csv"), ds.n_rows, 0)
        url = f"http://127.0.0.1:{self.env['port']}"
        token = (self.env["home"] / "targets" / "t1" / "run" / "admin_token").read_text().strip()
        rng = np.random.default_rng(4)
        with httpx.Client(base_url=url, timeout=60) as http:
            for start in range(0, len(rows), 100):
                rid = f"loan-{start}"
                answer = http.post("/predict", json={"features": rows[start:start + 100]},
                                   headers={"X-Request-ID": rid}).json()
                p = np.asarray([x["probability"] for x in answer["predictions"]])
                y = rng.random(p.size) < _sigmoid(_logit(p) - SHIFT)          # now the rate is below it
                labels = [{"request_id": rid, "row": i, "label": int(v)} for i, v in enumerate(y)]
                sent = http.post("/feedback", json={"labels": labels}, headers={"Authorization": f"Bearer {token}"})
                assert sent.json()["accepted"] == p.size, sent.text
        command = _guide_command().replace("--version 3", "--version 2")
        command = command.replace("--target local", f"--target t1 --targets {self.env['targets']}")
        out_json = self.env["home"].parent / "feedback.json"
        env = {**os.environ, "PIPELINE_HOME": str(self.env["home"]), "PREFECT_API_URL": PREFECT_API_URL.value()}
        env.pop("MLFLOW_TRACKING_URI", None)
        argv = shlex.split(command)
        out = subprocess.run([sys.executable, *argv[1:], "--config", str(self.config), "--json-out", str(out_json)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        return {"command": command, "out": out, "summary": json.loads(out_json.read_text()) if out_json.exists()
                else None, "champion": self.champion(), "served": host_status(self.env)["default_version"]}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, demo_frame, prefect_server):
    with scenario_home(tmp_path_factory, demo_frame, "recalibrate") as (env, data, config):
        yield Recalibrations(env, data, config)


def _served(scenario, rows: list[dict]) -> np.ndarray:
    answer = httpx.post(f"http://127.0.0.1:{scenario.env['port']}/predict", json={"features": rows}, timeout=60)
    return answer.json()


def test_a_recalibration_from_a_labels_csv_is_a_patch_release_on_the_same_network(scenario):
    from serving.contract.calibration import load_calibrator
    from serving.contract.metadata import read_metadata

    assert scenario.at("release")["release"] == "1.0.0"
    found = scenario.at("from_csv")
    s = found["summary"]
    assert (s["version"], s["release"], s["registry"]["version"]) == ("2", "1.0.1", "2")
    assert s["recalibrated_from"]["version"] == "1" and s["labels"]["how"] == "stratified"
    one, two = read_metadata(scenario.models / "1"), read_metadata(scenario.models / "2")
    # The same SavedModel, byte for byte; a new calibrator bound to it.
    assert two.model_digest == one.model_digest == s["model_digest"]
    assert {k: v for k, v in two.files.items() if k.startswith("saved_model/")} == \
        {k: v for k, v in one.files.items() if k.startswith("saved_model/")}
    assert two.files["calibrator.pkl"] != one.files["calibrator.pkl"]
    extra = two.model_extra
    assert extra["recalibrated_from"] == "1" and extra["recalibration"]["labels_sha256"] == s["labels"]["sha256"]
    assert two.lineage["labels"] == str(found["labels"]) and two.release == "1.0.1"
    # Judged on the held-out rows against version 1's pair: far better calibrated, the ranking kept.
    gate = s["gate"]
    assert gate["passed"] and gate["reasons"] == []
    assert gate["comparison"]["ece"]["interval"][1] < 0 and gate["comparison"]["brier"]["interval"][1] < 0
    assert s["holdout"]["recalibrated"]["ece"] < s["holdout"]["version_1"]["ece"] - 0.05
    mv = scenario.client.get_model_version("test-model", "2")
    assert mv.tags["blessed"] == "true" and json.loads(mv.tags["gate_reasons"]) == []
    assert mv.tags["recalibrated_from"] == "1" and mv.tags["release"] == "1.0.1"
    assert mv.tags["model_digest"] == one.model_digest and mv.tags["release_status"] == "registered"
    # Deployed to t1 and promoted; /predict answers with the new calibrator on the same raw scores.
    assert (found["champion"], found["served"]) == ("2", "2")
    assert s["deploy"]["champion_before"] == "1" and s["deploy"]["champion_after"] == "2"
    rows = [g.features for g in one.golden_examples]
    answer = _served(scenario, rows)
    assert answer["model_version"] == "2"
    raw = np.asarray([x["raw_score"] for x in answer["predictions"]])
    assert np.allclose(raw, [g.raw_score for g in one.golden_examples], atol=1e-6)
    cal = load_calibrator(scenario.models / "2" / "calibrator.pkl", two.files["calibrator.pkl"])
    assert np.allclose([x["probability"] for x in answer["predictions"]], cal(raw), atol=1e-6)
    assert not np.allclose(cal(raw), [g.probability for g in one.golden_examples], atol=1e-3)
    assert found["report"].startswith("# Recalibration 1.0.1 of test-model") and "held-out" in found["report"]


def test_the_guides_recalibration_from_feedback_runs_as_written(scenario):
    found = scenario.at("from_feedback")
    assert found["out"].returncode == 0, found["out"].stdout[-3000:] + found["out"].stderr[-3000:]
    s = found["summary"]
    assert (s["version"], s["release"], s["recalibrated_from"]["version"]) == ("3", "1.0.2", "2")
    assert s["labels"]["source"] == "feedback from target(s) t1" and s["labels"]["rows"] == 1000
    assert s["labels"]["how"] == "time" and s["gate"]["passed"]
    assert (found["champion"], found["served"]) == ("3", "3")
    assert "recalibration gate: passed" in found["out"].stdout


def test_a_labels_csv_that_breaks_the_contract_is_refused_naming_file_column_and_rows(scenario):
    from flows.recalibrate import recalibrate_flow
    from tasks.errors import DataValidationError

    scenario.at("release")
    bad = scenario.env["home"].parent / "bad-labels.csv"
    lines = scenario.at("from_csv")["labels"].read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("region")] = "mars"
    bad.write_text("\n".join([lines[0], *lines[1:3], ",".join(cells), *lines[4:]]) + "\n")
    before = {str(mv.version) for mv in scenario.client.search_model_versions("name = 'test-model'")}
    with pytest.raises(DataValidationError) as failure:
        recalibrate_flow(version="1", labels=str(bad), config=str(scenario.config))
    assert "bad-labels.csv" in str(failure.value) and "column 'region': unknown category" in str(failure.value)
    assert "rows 3" in str(failure.value)
    assert {str(mv.version) for mv in scenario.client.search_model_versions("name = 'test-model'")} == before
