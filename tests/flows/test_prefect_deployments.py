"""prefect.yaml for real: a Prefect server (temporary PREFECT_HOME, SQLite) and a process worker;
`prefect deploy --all`; a scheduled-retraining run, a paused promotion resumed with approval input,
and a critical alarm event that makes the rollback deployment move the champion back.

The worker gets the pipeline's settings the way a team's worker does: from its environment
(PIPELINE_HOME, PIPELINE_CONFIG, PIPELINE_TARGETS); prefect.yaml is deployed unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit.net import free_port
from tests.conftest import FAST_CONFIG, ROOT, mlflow_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFECT = str(Path(sys.executable).with_name("prefect"))
FLOW_TIMEOUT_S = 240


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


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _user_prefect_home() -> dict[str, float]:
    root = Path.home() / ".prefect"
    return {str(p): p.stat().st_mtime for p in root.rglob("*")} if root.exists() else {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_frame):
    """Server + work pool + deployments + worker; yields what the test needs, stops everything after.
    The user's ~/.prefect is left exactly as it was."""
    user_home_before = _user_prefect_home()
    base = tmp_path_factory.mktemp("prefect-stack")
    home = base / "pipeline"
    home.mkdir()
    (base / "pipeline.yaml").write_text(FAST_CONFIG)
    demo_frame.to_csv(base / "data.csv", index=False)
    serve_port, api_port = free_port(), free_port()
    (base / "targets.yaml").write_text(f"targets:\n  local:\n    transport: local\n    base_dir: targets/local\n"
                                       f"    port: {serve_port}\n    start_timeout_s: 120\n")
    api = f"http://127.0.0.1:{api_port}/api"
    env = {**os.environ, "PREFECT_HOME": str(base / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           # The schedules are registered and checked, but must not start runs in the middle of the test.
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
           # prefect.yaml's pull step is "{{ $PWD }}", which prefect deploy reads from the environment.
           "PWD": str(ROOT),
           "PIPELINE_HOME": str(home), "PIPELINE_CONFIG": str(base / "pipeline.yaml"),
           "PIPELINE_TARGETS": str(base / "targets.yaml"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = []

    def start(name, *args):
        log = base / f"{name}.log"
        proc = subprocess.Popen([PREFECT, *args], cwd=ROOT, env=env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc, log

    def run(*args, timeout=180):
        out = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    try:
        server, server_log = start("server", "server", "start", "--host", "127.0.0.1", "--port", str(api_port))
        _wait_http(f"{api}/health", server, server_log)
        run("work-pool", "create", "release-pool", "--type", "process")
        deployed = run("--no-prompt", "deploy", "--all")
        _worker, worker_log = start("worker", "worker", "start", "--pool", "release-pool")
        yield {"api": api, "env": env, "home": home, "data": base / "data.csv", "deployed": deployed,
               "worker_log": worker_log, "server_log": server_log, "targets": base / "targets.yaml"}
    finally:
        from tasks.deploy.targets import load_targets
        from tasks.deploy.transports import transport_for

        for target in load_targets(base / "targets.yaml", home).values():
            transport_for(target).host("stop")
        for proc in reversed(procs):
            _stop(proc)
    assert _user_prefect_home() == user_home_before, "the test touched ~/.prefect"


class _Retry503(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, attempts: int = 6) -> None:
        self.inner, self.attempts = inner, attempts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.attempts):
            response = self.inner.handle_request(request)
            if response.status_code != 503 or attempt + 1 == self.attempts:
                return response
            response.close()
            time.sleep(0.5 * 2**attempt)      # 0.5 s, 1 s, 2 s, … like Prefect's client backoff
        return response


class Api:
    """The server's REST API, as the UI and any client use it.

    Like Prefect's own client, it retries a 503: the SQLite-backed server answers 503 while its
    database is locked, which a loaded machine makes likelier."""

    def __init__(self, api: str) -> None:
        self.http = httpx.Client(base_url=api, timeout=30, transport=_Retry503(httpx.HTTPTransport()))

    def deployment(self, name: str) -> dict:
        resp = self.http.get(f"/deployments/name/{name}")
        resp.raise_for_status()
        return resp.json()

    def run(self, name: str, parameters: dict) -> str:
        resp = self.http.post(f"/deployments/{self.deployment(name)['id']}/create_flow_run",
                              json={"parameters": parameters})
        resp.raise_for_status()
        return resp.json()["id"]

    def flow_run(self, run_id: str) -> dict:
        resp = self.http.get(f"/flow_runs/{run_id}")
        resp.raise_for_status()
        return resp.json()

    def wait(self, run_id: str, states: set[str], log: Path, timeout_s: float = FLOW_TIMEOUT_S) -> dict:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            run = self.flow_run(run_id)
            state = run["state"]["type"]
            if state in states:
                return run
            if state in {"FAILED", "CRASHED", "CANCELLED"}:
                pytest.fail(f"flow run {run['name']} ended {state}: {run['state'].get('message')}\n"
                            f"worker log:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        pytest.fail(f"flow run {run_id} not in {states} within {timeout_s} s\n{log.read_text()[-4000:]}")

    def runs_of(self, deployment: str) -> list[dict]:
        resp = self.http.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [self.deployment(deployment)["id"]]}}})
        resp.raise_for_status()
        return resp.json()

    def artifacts(self, key: str) -> list[dict]:
        resp = self.http.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}})
        resp.raise_for_status()
        return resp.json()


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
