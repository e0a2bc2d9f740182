"""``python -m flows score`` end to end: a version released once for the module, scored as a user types it.

The probabilities are compared with the model server's ``/predict`` (the real app, in process) on the same
rows; bad input is one line, exit 2, nothing written; the how-to page's commands run as written.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tasks.release.reports import artifact_key
from tests.conftest import FAST_CONFIG, ROOT
from tests.flows.conftest import artifacts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = "docs/how-to/batch-scoring.md"
BAD_ROWS = {3: {"age": 150}, 10: {"region": "atlantis"}, 11: {"age": "old"}}   # 0-based rows of the input


@pytest.fixture(scope="module")
def released(tmp_path_factory, demo_frame, prefect_server):
    """A pipeline home with version 1 of test-model (released, the challenger; no champion yet)."""
    from prefect.settings import PREFECT_API_URL

    from testkit.fleet import register_versions

    reg = register_versions(tmp_path_factory.mktemp("score"), demo_frame, FAST_CONFIG, n=1)
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "SERVING_", "MLFLOW_"))}
    env = {**kept, "PIPELINE_HOME": str(reg["home"]), "PIPELINE_CONFIG": str(reg["config"]),
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    return {**reg, "env": env}


def score(released, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows", "score", *args], cwd=cwd or ROOT, env=released["env"],
                          capture_output=True, text=True, timeout=600)


def input_rows(frame, n: int = 300) -> dict[str, list]:
    rows = {"customer_id": [f"c{i:04d}" for i in range(n)],
            **{c: frame[c].tolist()[:n] for c in frame.columns if c != "default"}}
    for i, values in BAD_ROWS.items():
        for column, value in values.items():
            rows[column][i] = value
    return rows


def as_json(rows: dict[str, list], i: int, features: list[str]) -> dict:
    """Row ``i`` as a client sends it to /predict (JSON types: booleans, null for a missing number)."""
    out = {}
    for name in features:
        value = rows[name][i]
        if name == "has_mortgage":
            value = str(value).lower() == "true"
        elif isinstance(value, float) and math.isnan(value):
            value = None
        out[name] = value
    return out


def served_probabilities(export: Path, rows: list[dict]) -> np.ndarray:
    """What the model server answers for ``rows`` (its app in process, the export loaded through /load)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.settings import ServingSettings

    settings = ServingSettings(model_root=export.parent.parent, admin_token="t", max_batch_rows=1000)
    with TestClient(create_app(settings)) as client:
        loaded = client.post("/load", params={"model_dir": str(export.parent), "version": export.name},
                             headers={"Authorization": "Bearer t"})
        assert loaded.status_code == 200, loaded.text
        answer = client.post("/predict", json={"features": rows})
        assert answer.status_code == 200, answer.text
        return np.array([p["probability"] for p in answer.json()["predictions"]])


def test_a_csv_is_scored_as_the_server_scores_it(released, demo_frame, tmp_path, figure):
    rows = input_rows(demo_frame)
    data = tmp_path / "book.csv"
    pacsv.write_csv(pa.table({k: ["" if v is None or v != v else str(v) for v in vals] for k, vals in rows.items()}),
                    data)
    out, summary = tmp_path / "scores.parquet", tmp_path / "summary.json"
    done = score(released, "--version", "1", "--data", str(data), "--out", str(out), "--keep", "customer_id",
                 "--json-out", str(summary))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 300 rows" in done.stdout and "3 rejected" in done.stdout, done.stdout
    scores = pq.read_table(out).to_pydict()
    good = [i for i in range(300) if i not in BAD_ROWS]
    assert scores["row"] == [i + 1 for i in good] and scores["customer_id"] == [f"c{i:04d}" for i in good]
    assert set(scores["version"]) == {released["exports"]["1"]}
    rejects = pacsv.read_csv(tmp_path / "scores.parquet.rejects.csv").to_pylist()
    assert sorted((r["row"], r["column"], r["issue"]) for r in rejects) == [
        (4, "age", "out of range"), (11, "region", "unknown category"), (12, "age", "wrong type")]

    export = Path(released["client"].get_model_version(released["model"], "1").tags["model_dir"])
    features = [i["name"] for i in json.loads((export / "metadata.json").read_text())["inputs"]]
    served = served_probabilities(export, [as_json(rows, i, features) for i in good])
    diff = float(np.max(np.abs(np.asarray(scores["probability"]) - served)))
    figure("max_abs_diff_vs_server", diff, "probability", "297 rows: score's output against /predict")
    assert diff <= 1e-6          # the bound; the same call on the same typed inputs measured 0.0

    record = json.loads(summary.read_text())
    run = released["client"].get_run(record["run_id"])
    assert run.data.tags["model_version"] == "1" and run.data.tags["input_sha256"] == record["result"]["input_sha256"]
    assert run.data.metrics["rows_rejected"] == 3 and "psi.age" in run.data.metrics
    assert record["drift"]["thresholds"]["psi"]["warning"] == 0.15
    (latest, *_older) = artifacts(artifact_key("score", released["model"]))      # the flow's summary, in Prefect
    assert "297 scored, 3 rejected" in latest.description and record["run_id"] in latest.data


@pytest.mark.parametrize("case", ["no file", "unreadable", "column missing", "output exists", "no version",
                                  "no champion", "too many rejects"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(released, demo_frame, tmp_path, case):
    rows = input_rows(demo_frame, 50)
    data = tmp_path / "in.parquet"
    pq.write_table(pa.table({k: [str(v) for v in vals] for k, vals in rows.items()}), data)
    out = tmp_path / "out" / "scores.parquet"
    args = {"--version": "1", "--data": str(data), "--out": str(out)}
    said = {"no file": "no such file or directory", "unreadable": "unreadable as PARQUET",
            "column missing": "no column 'income'", "output exists": "exists; pass --overwrite",
            "no version": "has no version 9", "no champion": "has no champion yet",
            "too many rejects": "3 of 50 rows break the contract"}[case]
    if case == "no file":
        args["--data"] = str(tmp_path / "missing.csv")
    elif case == "unreadable":
        data.write_bytes(b"not parquet at all")
    elif case == "column missing":
        pq.write_table(pq.read_table(data).drop_columns(["income"]), data)
    elif case == "output exists":
        out.parent.mkdir()
        out.write_text("yesterday's scores")
    elif case in ("no version", "no champion"):
        args["--version"] = "9" if case == "no version" else "champion"
    before = sorted(tmp_path.rglob("*"))
    done = score(released, *[w for kv in args.items() for w in kv])
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-2000:])
    assert said in done.stderr and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")] == [done.stderr.strip().splitlines()[-1]]
    assert sorted(tmp_path.rglob("*")) == before, "nothing written"
    if case == "output exists":
        assert out.read_text() == "yesterday's scores"


def test_the_guides_score_commands_run_as_written(released, tmp_path):
    """The how-to page's commands, from a directory laid out like a checkout, the champion set by hand."""
    from tests.flows.test_guide_commands import documented_commands

    released["client"].set_registered_model_alias(released["model"], "champion", "1")
    (tmp_path / "data").symlink_to(ROOT / "data")
    commands = [c for doc, c in documented_commands() if doc == PAGE]
    assert len(commands) == 2, commands
    # `python` is the checkout's venv's, as after `make install` and `source .venv/bin/activate`
    env = {**released["env"], "PATH": f"{Path(sys.executable).parent}:{released['env'].get('PATH', '')}"}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
        assert "scored 6000 rows" in done.stdout and ", 0 rejected" in done.stdout, done.stdout
    assert pq.read_table(tmp_path / "scores.parquet").num_rows == 6000
    csv = pacsv.read_csv(tmp_path / "scores.csv")
    assert csv.column_names == ["row", "region", "age", "probability", "raw_score", "version"]
