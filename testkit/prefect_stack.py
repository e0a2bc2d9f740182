"""A real Prefect stack for tests: ``prefect server start`` (temporary PREFECT_HOME, SQLite), the
release-pool work pool, ``prefect deploy --all`` of prefect.yaml and a process worker; and the server's
REST API as the UI and any client use it.

The worker gets the pipeline's settings the way a team's worker does: from its environment
(PIPELINE_HOME, PIPELINE_CONFIG, PIPELINE_TARGETS); prefect.yaml is deployed unchanged. Everything the
stack started is stopped after, and the user's ~/.prefect is left exactly as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from testkit.net import free_port

PREFECT = str(Path(sys.executable).with_name("prefect"))
FLOW_TIMEOUT_S = 240
ROOT = Path(__file__).resolve().parent.parent


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Return once ``url`` answers 200; fail with the process's log if it exited or the time ran out."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
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


def stack_env(base: Path, home: Path, api: str, ui: bool) -> dict[str, str]:
    """The environment of the server, the worker and every ``prefect`` command of the stack."""
    env = {**os.environ, "PREFECT_HOME": str(base / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "true" if ui else "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           # The schedules are registered and checked, but must not start runs in the middle of the test.
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
           # prefect.yaml's pull step is "{{ $PWD }}", which prefect deploy reads from the environment.
           "PWD": str(ROOT),
           "PIPELINE_HOME": str(home), "PIPELINE_CONFIG": str(base / "pipeline.yaml"),
           "PIPELINE_TARGETS": str(base / "targets.yaml"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@contextmanager
def prefect_stack(base: Path, config: str, frame, ui: bool = False) -> Iterator[dict]:
    """Server + work pool + deployments + worker under ``base``, the pipeline configured by ``config`` (YAML
    text) with the demo ``frame`` as its data and one local target; with ``ui`` the server also serves both
    UIs (the classic one at ``/``, the new one at ``/v2``). Yields what a test needs; stops everything after."""
    user_home_before = _user_prefect_home()
    home = base / "pipeline"
    home.mkdir()
    (base / "pipeline.yaml").write_text(config)
    frame.to_csv(base / "data.csv", index=False)
    serve_port, api_port = free_port(), free_port()
    (base / "targets.yaml").write_text(f"targets:\n  local:\n    transport: local\n    base_dir: targets/local\n"
                                       f"    port: {serve_port}\n    start_timeout_s: 120\n")
    api = f"http://127.0.0.1:{api_port}/api"
    env = stack_env(base, home, api, ui)
    procs = []

    def start(name, *args):
        log = base / f"{name}.log"
        with open(log, "w") as out:
            procs.append(subprocess.Popen([PREFECT, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        return procs[-1], log

    def run(*args, timeout=180):
        out = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    try:
        server, server_log = start("server", "server", "start", "--host", "127.0.0.1", "--port", str(api_port))
        wait_http(f"{api}/health", server, server_log)
        run("work-pool", "create", "release-pool", "--type", "process")
        deployed = run("--no-prompt", "deploy", "--all")
        _worker, worker_log = start("worker", "worker", "start", "--pool", "release-pool")

        def restart_server(kill: bool = False, down_s: float = 0) -> float:
            """Stop the server (SIGTERM, or SIGKILL with ``kill``), wait ``down_s``, start it again on the same
            database and port; returns the seconds the API did not answer."""
            nonlocal server
            down = time.monotonic()
            server.kill() if kill else server.terminate()
            server.wait(timeout=30)
            procs.remove(server)
            time.sleep(down_s)
            server, _log = start("server-restarted", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(api_port))
            wait_http(f"{api}/health", server, _log)
            return time.monotonic() - down

        yield {"api": api, "ui": f"http://127.0.0.1:{api_port}", "env": env, "home": home, "data": base / "data.csv",
               "deployed": deployed, "worker_log": worker_log, "server_log": server_log,
               "targets": base / "targets.yaml", "restart_server": restart_server}
    finally:
        from tasks.deploy.targets import load_targets
        from tasks.deploy.transports import transport_for

        for target in load_targets(base / "targets.yaml", home).values():
            transport_for(target).host("stop")
        for proc in reversed(procs):
            stop(proc)
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
        """The flow run once its state type is one of ``states``; fails with the worker's log if it ended
        otherwise or the time ran out."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            run = self.flow_run(run_id)
            state = run["state"]["type"]
            if state in states:
                return run
            if state in {"FAILED", "CRASHED", "CANCELLED"}:
                raise AssertionError(f"flow run {run['name']} ended {state}: {run['state'].get('message')}\n"
                                     f"worker log:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} not in {states} within {timeout_s} s\n{log.read_text()[-4000:]}")

    def runs_of(self, deployment: str) -> list[dict]:
        resp = self.http.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [self.deployment(deployment)["id"]]}}})
        resp.raise_for_status()
        return resp.json()

    def artifacts(self, key: str) -> list[dict]:
        resp = self.http.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}})
        resp.raise_for_status()
        return resp.json()
