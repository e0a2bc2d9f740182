"""deployments/monitoring/: promtool accepts the rules and their unit tests pass, and every series the
rules and the Grafana dashboard name is one the server's /metrics really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.settings import ServingSettings
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

FILES = ROOT / "deployments" / "monitoring"
SERIES = re.compile(r"\b((?:serving|process|python)_[a-z_]+)")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed; `make test` installs Debian's prometheus package")
    return subprocess.run([exe, *args], cwd=FILES, capture_output=True, text=True, timeout=120)


def test_promtool_checks_and_tests_the_rules():
    checked = _promtool("check", "rules", "prometheus-rules.yml")
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "prometheus-rules.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _named_series() -> set[str]:
    rules = (FILES / "prometheus-rules.yml").read_text()
    dashboard = json.loads((FILES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [t["query"] for t in dashboard["templating"]["list"] if t.get("query", "").startswith("label_values")]
    return set(SERIES.findall(rules + "\n".join(exprs)))


def test_every_series_the_rules_and_dashboard_name_is_exported(served_models):
    token = "t"
    settings = ServingSettings(model_root=served_models["root"], admin_token=token)
    golden = json.loads((served_models["model_dir"] / "1" / "metadata.json").read_text())["golden_examples"]
    rows = [g["features"] for g in golden]
    with TestClient(create_app(settings)) as client:
        assert client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "1"},
                           headers={"Authorization": f"Bearer {token}"}).status_code == 200
        ids = [client.post("/predict", json={"features": rows}).json()["request_id"] for _ in range(20)]
        client.post("/predict", json={"features": [rows[0] | {"region": "mars"}]})
        labels = [{"request_id": rid, "row": i, "label": i % 2} for rid in ids for i in range(len(rows))]
        client.post("/feedback", json={"labels": labels}, headers={"Authorization": f"Bearer {token}"})
        text = client.get("/metrics").text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    named = _named_series()
    assert {"serving_feature_psi", "serving_ece", "serving_healthy", "process_resident_memory_bytes"} <= named
    assert named - exported == set()
    assert "python_gc_objects_collected_total" in exported and "python_info" in exported   # runtime metrics kept
