"""The monitor on a live server: in-distribution traffic is quiet, shifted traffic raises PSI alarms
on the right features, an alarm is sent once and resolved once, labels through /feedback give an ECE
alarm, and a refused /load raises nothing (so nothing rolls back)."""

from __future__ import annotations

import math
import time

import httpx
import numpy as np
import pytest

from tasks.constants import ALARM_CRITICAL
from testkit.demo import make_demo
from testkit.receiver import Receiver
from tests.conftest import ROOT
from tests.flows.conftest import Steps, scenario_home

pytestmark = pytest.mark.integration

MONITORING = """
lookback_minutes: 60
min_rows_for_drift: 200
min_labels: 200
host_attempts: 1
"""


def _rows(frame) -> list[dict]:
    rows = []
    for rec in frame.drop(columns=["default"]).to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        row["has_mortgage"] = row["has_mortgage"] == "true"
        rows.append(row)
    return rows


class Watching(Steps):
    """Version 1 on t1; traffic in distribution, then shifted; labels; a refused load; three hours later."""

    STEPS = ("release", "quiet", "shifted", "again", "labels", "refused_load", "later")

    def __init__(self, env: dict, data, config, monitoring, receiver: Receiver) -> None:
        super().__init__()
        self.env, self.data, self.config, self.monitoring, self.rx = env, data, config, monitoring, receiver
        self.url = f"http://127.0.0.1:{env['port']}"
        self.request_ids: list[str] = []

    def monitor(self, now: float | None = None) -> dict:
        from flows.monitor import monitor_flow

        return monitor_flow(targets_file=self.env["targets"], config=str(self.config),
                            monitoring=str(self.monitoring), now=now)

    def send(self, rows: list[dict], batch: int = 20) -> list[dict]:
        out = []
        for i in range(0, len(rows), batch):
            resp = httpx.post(f"{self.url}/predict", json={"features": rows[i:i + batch]}, timeout=30)
            assert resp.status_code == 200, resp.text[:500]
            self.request_ids.append(resp.json()["request_id"])
            out.append(resp.json())
        return out

    def _release(self, patch):
        from flows.release import release_flow

        return release_flow(data=str(self.data), schema=str(ROOT / "configs" / "schema.yaml"),
                            feature_list=str(ROOT / "configs" / "feature_list.csv"), config=str(self.config),
                            targets=["t1"], targets_file=self.env["targets"])

    def _quiet(self, patch):
        self.served = self.send(_rows(make_demo(n_rows=400, seed=123)))
        return self.monitor()

    def _shifted(self, patch):
        frame = make_demo(n_rows=400, seed=321)
        frame["age"] = np.random.default_rng(0).integers(66, 80, len(frame))
        frame["region"] = "north"
        self.served += self.send(_rows(frame))
        return {"result": self.monitor(), "received": list(self.rx.received)}

    def _again(self, patch):
        return {"result": self.monitor(), "received": list(self.rx.received)}

    def _labels(self, patch):
        token = (self.env["home"] / "targets" / "t1" / "run" / "admin_token").read_text().strip()
        # Miscalibrated on purpose: the rows the model finds safest defaulted.
        labels = [{"request_id": r["request_id"], "row": i, "label": int(p["probability"] < 0.15)}
                  for r in self.served for i, p in enumerate(r["predictions"])]
        answer = httpx.post(f"{self.url}/feedback", json={"labels": labels},
                            headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        return {"answer": answer, "result": self.monitor()}

    def _refused_load(self, patch):
        token = (self.env["home"] / "targets" / "t1" / "run" / "admin_token").read_text().strip()
        refused = httpx.post(f"{self.url}/load", params={"model_dir": str(self.env["home"] / "nowhere"),
                                                         "version": "99"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return {"status": refused.status_code, "result": self.monitor(),
                "health": httpx.get(f"{self.url}/health", timeout=30)}

    def _later(self, patch):
        """Three hours on, nothing in the lookback: the drift and calibration alarms resolve."""
        before = len(self.rx.received)
        result = self.monitor(now=time.time() + 3 * 3600)
        return {"result": result, "new": self.rx.received[before:]}


@pytest.fixture(scope="module")
def watching(prefect_server, tmp_path_factory, demo_frame):
    with Receiver() as rx, scenario_home(tmp_path_factory, demo_frame, "watching") as (env, data, config), \
            pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_SLACK_WEBHOOK_URL", rx.url + "/slack")
        patch.setenv("PIPELINE_PAGERDUTY_ROUTING_KEY", "test-routing-key")
        patch.setenv("PIPELINE_PAGERDUTY_URL", rx.url + "/pagerduty")
        monitoring = config.parent / "monitoring.yaml"
        monitoring.write_text(MONITORING)
        yield Watching(env, data, config, monitoring, rx)


def _alarms(result: dict) -> dict[str, str]:
    return {a["rule"]: a["level"] for t in result["targets"] for found in t["alarms"].values() for a in found}


def test_in_distribution_traffic_raises_nothing(watching):
    watching.at("release")
    quiet = watching.at("quiet")
    assert _alarms(quiet) == {} and quiet["transitions"] == [] and watching.rx.received == []
    (target,) = quiet["targets"]
    (assessment,) = target["assessment"].values()
    assert assessment["traffic"]["requests"] == 20 and assessment["traffic"]["rows"] == 400
    assert all(f["psi"] is not None and f["psi"] < 0.15 for f in assessment["features"].values())
    assert assessment["traffic"]["latency_ms"]["p95"] is not None and assessment["traffic"]["error_rate"] == 0


def test_shifted_inputs_raise_psi_alarms_on_those_features(watching):
    shifted = watching.at("shifted")
    alarms = _alarms(shifted["result"])
    assert alarms["psi:age"] == "critical" and alarms["psi:region"] == "critical"
    assert not {k for k in alarms if k.startswith("psi:")} - {"psi:age", "psi:region"}
    assert all(not a["rollback"] for t in shifted["result"]["targets"] for f in t["alarms"].values() for a in f)
    assert {c["event"] for c in shifted["result"]["transitions"]} <= {"pipeline.alarm.page", "pipeline.alarm.warning"}
    pages = [b for p, b in shifted["received"] if p == "/pagerduty"]
    assert {b["dedup_key"].rsplit("|", 1)[1] for b in pages} >= {"psi:age", "psi:region"}
    assert all(b["event_action"] == "trigger" for b in pages)


def test_an_alarm_still_firing_is_not_sent_again(watching):
    again = watching.at("again")
    assert again["result"]["transitions"] == [] and again["received"] == watching.at("shifted")["received"]
    assert "t1|1|psi:age" in again["result"]["firing"]


def test_labels_through_feedback_give_an_ece_alarm(watching):
    labelled = watching.at("labels")
    assert labelled["answer"]["accepted"] == 800 and labelled["answer"]["unknown"] == 0
    (target,) = labelled["result"]["targets"]
    (assessment,) = target["assessment"].values()
    assert assessment["labels"]["n"] == 800 and assessment["labels"]["ece"] > 0.10
    assert _alarms(labelled["result"])["ece"] == "warning"     # critical needs 2 consecutive hours


def test_a_refused_load_raises_no_alarm_and_no_rollback(watching):
    refused = watching.at("refused_load")
    assert refused["status"] == 400 and refused["health"].status_code == 200
    assert refused["health"].json()["warnings"]
    assert refused["result"]["findings"][0]["alarm"] is None
    assert all(c["event"] != ALARM_CRITICAL for c in refused["result"]["transitions"])


def test_alarms_resolve_once_when_the_condition_is_gone(watching):
    later = watching.at("later")
    resolved = {c["rule"] for c in later["result"]["transitions"] if c["state"] == "resolved"}
    assert {"psi:age", "psi:region", "ece"} <= resolved and later["result"]["firing"] == []
    pd_resolves = [b for p, b in later["new"] if p == "/pagerduty"]
    assert pd_resolves and all(b["event_action"] == "resolve" for b in pd_resolves)
    assert sum(1 for p, b in later["new"] if p == "/slack" and "[RESOLVED]" in b["text"]) == len(resolved)


def test_the_30_second_health_check_pages_once_when_down_and_resolves(prefect_server, target_env, served_models,
                                                                      tmp_path, monkeypatch):
    from flows.health import health_flow
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text("host_attempts: 2\nhost_retry_wait_s: 0.1\n")
    target = load_targets(target_env["targets"], target_env["home"])["t1"]
    bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
    deploy_to(target, bundle, meta)
    with Receiver() as rx:
        monkeypatch.setenv("PIPELINE_PAGERDUTY_ROUTING_KEY", "k")
        monkeypatch.setenv("PIPELINE_PAGERDUTY_URL", rx.url + "/pagerduty")

        def check():
            return health_flow(targets_file=target_env["targets"], monitoring=str(monitoring))

        first = check()
        assert first["targets"]["t1"]["status"] == "healthy" and first["targets"]["t1"]["alarm"] is None
        # No watcher runs here (python -m flows watch): a deployed target with no heartbeat pages that too.
        assert [(t["target"], t["rule"]) for t in first["transitions"]] == [("health-watcher", "health_watcher")]
        transport_for(target).host("stop")
        down = check()
        assert "unreachable" in down["targets"]["t1"]["alarm"] and "2 attempt(s)" in down["targets"]["t1"]["alarm"]
        assert check()["transitions"] == []                     # still down: not paged again
        deploy_to(target, bundle, meta)
        up = check()
        assert [(t["rule"], t["state"]) for t in up["transitions"]] == [("liveness", "resolved")]
        liveness = [b["event_action"] for b in rx.on("/pagerduty") if b["dedup_key"].endswith("|liveness")]
        assert liveness == ["trigger", "resolve"]
