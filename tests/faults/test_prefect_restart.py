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


@pytest.mark.parametrize("kill, down_s", [(False, 0), (True, 90)], ids=["sigterm", "sigkill-down-90s"])
def test_approval_survives_a_server_restart(stack, figure, kill, down_s):
    api, log = Api(stack["api"]), stack["worker_log"]
    client = mlflow_client(stack["home"])[0]
    api.wait(api.run("release/retrain", {"data": str(stack["data"]), "targets": []}), {"COMPLETED"}, log)
    assert str(client.get_model_version_by_alias("test-model", "challenger").version) == "1"

    promote = api.run("promote/promote", {"version": "1", "poll_interval_s": 1})
    api.wait(promote, {"PAUSED"}, log)
    downtime = stack["restart_server"](kill=kill, down_s=down_s)
    restarted = time.monotonic()
    figure("server_down", round(downtime, 1), "s", "stop to /health answering again")
    paused = api.flow_run(promote)
    print("AFTER RESTART", paused["state"])
    assert paused["state"]["type"] == "PAUSED", paused["state"]
    resp = api.http.post(f"/flow_runs/{promote}/resume",
                         json={"run_input": {"approve": True, "approver": "alice@example.com",
                                             "reason": "approved after a server restart"}})
    assert resp.status_code in (200, 201) and resp.json()["status"] == "ACCEPT", resp.text
    done = api.wait(promote, {"COMPLETED"}, log)
    figure("restart_to_completed", round(time.monotonic() - restarted, 1), "s",
           "server healthy again to the promotion's run completed (deploy and smoke test included)")
    assert done["state"]["name"] == "Approved", done["state"]
    v1 = client.get_model_version("test-model", "1")
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    assert v1.tags["approval_approver"] == "alice@example.com"
    assert v1.tags["approval_reason"] == "approved after a server restart"

    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    status = transport_for(load_targets(stack["targets"], stack["home"])["local"]).host("status")
    assert status["default_version"] == v1.tags["export_version"], status
