"""The Prefect server restarted while a promotion waits for its approval (issue 23 item 3).

A real ``prefect server start`` (SQLite under a temporary PREFECT_HOME), a process worker and ``prefect
deploy --all`` (testkit.prefect_stack). A retraining that stops at the gate makes version 1 the blessed
candidate; ``promote/promote`` pauses for approval; the server is stopped (SIGTERM) and started again on
the same database and port while the paused run's process keeps polling it; then the approval is sent
through the REST API as the UI sends it. The approval must still work: the host serves version 1, the
champion alias moves and the audit tags are written.
"""

from __future__ import annotations

import time

import pytest

from testkit.prefect_stack import Api, prefect_stack
from tests.conftest import FAST_CONFIG, mlflow_client

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path, demo_frame):
    with prefect_stack(tmp_path, FAST_CONFIG, demo_frame) as running:
        yield running


def _paused_promotion(stack) -> tuple[Api, str]:
    """Version 1 released to the gate (no host), then promote/promote paused for its approval."""
    api, log = Api(stack["api"]), stack["worker_log"]
    client = mlflow_client(stack["home"])[0]
    api.wait(api.run("release/retrain", {"data": str(stack["data"]), "targets": []}), {"COMPLETED"}, log)
    assert str(client.get_model_version_by_alias("test-model", "challenger").version) == "1"
    promote = api.run("promote/promote", {"version": "1", "poll_interval_s": 1})
    api.wait(promote, {"PAUSED"}, log)
    return api, promote


def _approve(api: Api, run_id: str, reason: str) -> None:
    """The approval form's input, as the UI sends it."""
    resp = api.http.post(f"/flow_runs/{run_id}/resume",
                         json={"run_input": {"approve": True, "approver": "alice@example.com", "reason": reason}})
    assert resp.status_code in (200, 201) and resp.json()["status"] == "ACCEPT", resp.text


def _promoted(stack, reason: str) -> None:
    """Version 1 is the champion with the approval's audit tags, and the host serves it."""
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    client = mlflow_client(stack["home"])[0]
    v1 = client.get_model_version("test-model", "1")
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    assert v1.tags["approval_approver"] == "alice@example.com" and v1.tags["approval_reason"] == reason
    status = transport_for(load_targets(stack["targets"], stack["home"])["local"]).host("status")
    assert status["default_version"] == v1.tags["export_version"], status


def test_approval_survives_a_server_restart(stack, figure):
    """SIGTERM and a start at once (an upgrade, a host reboot of the server alone)."""
    api, promote = _paused_promotion(stack)
    downtime = stack["restart_server"]()
    restarted = time.monotonic()
    figure("server_down", round(downtime, 1), "s", "SIGTERM to /health answering again")
    assert api.flow_run(promote)["state"]["type"] == "PAUSED"
    _approve(api, promote, "approved after a server restart")
    done = api.wait(promote, {"COMPLETED"}, stack["worker_log"])
    figure("restart_to_completed", round(time.monotonic() - restarted, 1), "s",
           "server healthy again to the promotion's run completed (deploy and smoke test included)")
    assert done["state"]["name"] == "Approved", done["state"]
    _promoted(stack, "approved after a server restart")


def test_long_outage_fails_the_paused_run_and_a_new_promotion_works(stack, figure):
    """SIGKILL and 90 s down: longer than the paused run's process retries (Prefect's client: 5 retries,
    2, 4, … 32 s apart, about 62 s). That process gives up; the run ends Failed once the server is back,
    saying so, nothing deployed or promoted; a new promotion works."""
    api, promote = _paused_promotion(stack)
    downtime = stack["restart_server"](kill=True, down_s=90)
    figure("server_down", round(downtime, 1), "s", "SIGKILL to /health answering again")
    end = time.monotonic() + 120   # the failed process's last state write waits out its own retries
    while time.monotonic() < end and api.flow_run(promote)["state"]["type"] == "PAUSED":
        time.sleep(1)
    state = api.flow_run(promote)["state"]
    print("AFTER RESTART", state["type"], state["message"])
    # flows/promote.py says what happened and what to do (before: "ConnectError: [Errno 111] Connection refused")
    assert state["type"] == "FAILED" and "the Prefect server did not answer while version 1 waited" in \
        state["message"] and "start a new promotion" in state["message"], state
    client = mlflow_client(stack["home"])[0]
    assert not client.get_registered_model("test-model").aliases.get("champion")
    assert "approval_approver" not in client.get_model_version("test-model", "1").tags

    again = api.run("promote/promote", {"version": "1", "poll_interval_s": 1})
    api.wait(again, {"PAUSED"}, stack["worker_log"])
    _approve(api, again, "approved after the outage")
    api.wait(again, {"COMPLETED"}, stack["worker_log"])
    _promoted(stack, "approved after the outage")
