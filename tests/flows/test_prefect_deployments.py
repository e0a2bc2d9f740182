"""prefect.yaml for real: a Prefect server (temporary PREFECT_HOME, SQLite) and a process worker
(testkit.prefect_stack); `prefect deploy --all`; a scheduled-retraining run, a paused promotion resumed
with approval input, and a critical alarm event that makes the rollback deployment move the champion back.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time

import pytest

from testkit.prefect_stack import FLOW_TIMEOUT_S, PREFECT, Api, prefect_stack
from tests.conftest import FAST_CONFIG, ROOT, mlflow_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def guide_command(stack, start: str, replace: dict[str, str], extra: list[str] = ()) -> str:
    """Run the command of deployments/HANDOVER.md that begins with ``start``, as written but for ``replace``
    (values that differ in this run) and ``extra`` arguments; returns its output."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "deployments" / "HANDOVER.md").read_text())
    (line,) = [ln.split("    #")[0].strip() for ln in text.splitlines() if ln.strip().startswith(start)]
    for old, new in replace.items():
        assert old in line, (old, line)
        line = line.replace(old, new)
    argv = shlex.split(line)
    argv[0] = PREFECT
    out = subprocess.run([*argv, *extra], cwd=ROOT, env=stack["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (line, out.stdout[-2000:], out.stderr[-2000:])
    return out.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_frame):
    """Server + work pool + deployments + worker (testkit.prefect_stack); stopped after the module."""
    with prefect_stack(tmp_path_factory.mktemp("prefect-stack"), FAST_CONFIG, demo_frame) as running:
        yield running


def test_deployments_register_with_schedules_and_trigger(stack):
    api = Api(stack["api"])
    names = {"release/retrain", "deploy/deploy", "promote/promote", "rollback/rollback", "monitor/monitor",
             "health/health", "recalibrate/recalibrate"}
    deployments = {n: api.deployment(n) for n in names}
    assert all(d["work_pool_name"] == "release-pool" for d in deployments.values())
    retrain = deployments["release/retrain"]["schedules"]
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in retrain] == [("0 3 * * 1", "UTC")]
    assert [s["schedule"]["cron"] for s in deployments["monitor/monitor"]["schedules"]] == ["0 * * * *"]
    assert [s["schedule"]["interval"] for s in deployments["health/health"]["schedules"]] == [21600.0]   # 4 a day
    # `prefect deployment run promote/promote --param version=3` sends a number: every version parameter takes one.
    for name, param in (("deploy/deploy", "version"), ("promote/promote", "version"), ("rollback/rollback", "version"),
                        ("rollback/rollback", "failing_version"), ("recalibrate/recalibrate", "version")):
        prop = deployments[name]["parameter_openapi_schema"]["properties"][param]
        assert {"integer", "string"} <= {t.get("type") for t in prop.get("anyOf", [prop])}, (name, prop)
    automations = api.http.post("/automations/filter", json={}).json()
    (rollback_trigger,) = [a for a in automations
                           if any(act.get("deployment_id") == deployments["rollback/rollback"]["id"]
                                  for act in a["actions"])]
    assert rollback_trigger["trigger"]["expect"] == ["pipeline.alarm.critical"]
    assert rollback_trigger["actions"][0]["parameters"]["failing_version"] == "{{ event.payload.version }}"
    rollback = deployments["rollback/rollback"]
    assert rollback["global_concurrency_limit"]["limit"] == 1
    assert rollback["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployments["release/retrain"]["parameters"]["config"] is None
    assert {"target", "version", "failing_version"} <= set(rollback["parameter_openapi_schema"]["properties"])
    (pull,) = deployments["release/retrain"]["pull_steps"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)


def test_retrain_promote_with_approval_then_alarm_rolls_back(stack):
    api, log = Api(stack["api"]), stack["worker_log"]
    client = mlflow_client(stack["home"])[0]

    # Scheduled retraining, run now: trains, gates, deploys to "local", promotes version 1.
    first = api.wait(api.run("release/retrain", {"data": str(stack["data"])}), {"COMPLETED"}, log)
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1", first["name"]
    # A second retraining that stops at the gate: version 2 becomes the challenger.
    api.wait(api.run("release/retrain", {"data": str(stack["data"]), "targets": []}), {"COMPLETED"}, log)
    assert str(client.get_model_version_by_alias("test-model", "challenger").version) == "2"
    assert len(api.artifacts("release-report-test-model")) == 2

    # Manual promotion, started with the guide's own command (its version 3 is this run's 2): pauses with
    # the comparison published, resumed with the approval form's input.
    started = guide_command(stack, "prefect deployment run promote/promote", {"version=3": "version=2"},
                            extra=["--param", "poll_interval_s=1"])
    promote = re.search(r"UUID: ([0-9a-f-]{36})", started).group(1)
    paused = api.wait(promote, {"PAUSED"}, log)
    assert paused["state"]["state_details"]["run_input_keyset"], "the pause must carry an input form"
    (comparison,) = api.artifacts("promotion-comparison-test-model")
    assert "Promote test-model version 2?" in comparison["data"] and "| roc_auc |" in comparison["data"]
    resp = api.http.post(f"/flow_runs/{promote}/resume",
                         json={"run_input": {"approve": True, "approver": "alice@example.com",
                                             "reason": "better on the new data"}})
    assert resp.status_code in (200, 201) and resp.json()["status"] == "ACCEPT", resp.text
    api.wait(promote, {"COMPLETED"}, log)
    v2 = client.get_model_version("test-model", "2")
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "2"
    assert v2.tags["approval_approver"] == "alice@example.com" and v2.tags["previous_champion"] == "1"

    # Two critical alarms about version 2 on "local" (a burst, as several checks would send): the
    # trigger starts the rollback deployment twice; they run one at a time; the first moves champion
    # back to 1, the second finds it moved and the host already on version 1, and changes nothing.
    # The guide's `prefect event emit` command, twice (its version 3 is this run's 2).
    for reason in ("p99 latency 900 ms", "error rate 12%"):
        guide_command(stack, "prefect event emit pipeline.alarm.critical",
                      {'"version": "3"': '"version": "2"', "p99 latency 900 ms": reason})
    end = time.monotonic() + FLOW_TIMEOUT_S
    while time.monotonic() < end and len(api.runs_of("rollback/rollback")) < 2:
        time.sleep(1)
    rollbacks = api.runs_of("rollback/rollback")
    assert len(rollbacks) == 2, rollbacks
    assert all(r["parameters"]["failing_version"] == "2" and r["parameters"]["target"] == "local" for r in rollbacks)
    done = [api.wait(r["id"], {"COMPLETED"}, log) for r in rollbacks]
    first, second = sorted(done, key=lambda r: r["start_time"])
    assert second["start_time"] >= first["end_time"], "the rollback deployment ran two runs at once"
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    assert client.get_model_version("test-model", "1").tags["rolled_back_to_reason"].startswith("critical alarm: ")
    assert client.get_model_version("test-model", "2").tags["rolled_back_from_to"] == "1"
    reports = [a["data"] for a in api.artifacts("rollback-report-test-model")]
    assert sorted(r.splitlines()[0].rsplit(": ", 1)[1] for r in reports) == ["rolled back", "skipped"], reports
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    status = transport_for(load_targets(stack["targets"], stack["home"])["local"]).host("status")
    assert status["default_version"] == client.get_model_version("test-model", "1").tags["export_version"]
