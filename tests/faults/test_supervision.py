"""A server process killed under load is replaced and serves what it served before."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.load import Load, percentile
from tests.conftest import ROOT
from tests.faults.conftest import AUTH, supervised, wait_until, worker_pids
from tests.serving.test_live_server import _call

pytestmark = [pytest.mark.integration, pytest.mark.faults]

UNIT = ROOT / "deployments" / "systemd" / "ml-pipeline-api.service"


def test_a_killed_server_process_is_replaced_and_serves_the_same_version(supervised_server, served_models, figure):
    port, master = supervised_server["port"], supervised_server["master"]
    model_dir = str(served_models["model_dir"])
    status, body = _call(port, "POST", f"/load?model_dir={model_dir}&version=2", headers=AUTH, timeout=120)
    assert status == 200 and body["default_version"] == "2"
    golden = json.loads((served_models["model_dir"] / "2" / "metadata.json").read_text())["golden_examples"]
    request = json.dumps({"features": [golden[0]["features"]]}).encode()
    [worker] = worker_pids(master)

    with Load(port, request, clients=8, max_requests=20_000, max_seconds=150, timeout=60) as load:
        wait_until(lambda: load.count() >= 300, 60, "300 requests before the kill")
        killed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        replaced = wait_until(lambda: [p for p in worker_pids(master) if p != worker], 30, "a new server process")
        wait_until(lambda: any(o.started > killed_at and o.status == 200 for o in list(load.outcomes)), 120,
                   "a request answered after the kill")
        answered = load.count()
        wait_until(lambda: load.count() >= answered + 300, 60, "300 more requests")
    outcomes = load.stop()

    failed = [o for o in outcomes if o.status != 200]
    after = [o for o in outcomes if o.started > killed_at and o.status == 200]
    back = min(o.started + o.seconds for o in after) - killed_at
    figure("requests", len(outcomes), "requests", "8 clients, one worker killed with SIGKILL")
    figure("failed_requests", len(failed), "requests", "in flight when the worker died")
    figure("seconds_to_serving_again", round(back, 2), "s", "kill to the first answer of the new worker")
    p99 = percentile([o.seconds for o in outcomes], 99)
    figure("p99_across_restart", round(p99 * 1000, 1), "ms")
    assert supervised_server["proc"].poll() is None and replaced
    # Only each client's request on its connection to the killed worker can fail (one per client), all sent before
    # the new worker's first answer: the master keeps the socket, so new connections queue.
    assert len(failed) <= 8 and all(o.started < killed_at + back for o in failed), failed[:10]
    assert {o.version for o in after} == {"2"}          # the state file, not the version it started with
    health = _call(port, "GET", "/health")[1]
    assert health["default_version"] == "2" and health["loaded_versions"] == ["1", "2"]
    # Measured: serving again 3.4-4.6 s after the kill, p99 of the run 40 ms-4.6 s (the queued requests wait
    # that long; docs/explanation/reliability.md); 2x margin on the slowest.
    assert back < 10 and p99 < 10, (back, p99)


def test_one_of_two_workers_killed_under_load_is_replaced_and_follows_the_host(served_models, tmp_path, figure):
    with supervised(served_models, tmp_path, workers=2) as server:
        port, master, model_dir = server["port"], server["master"], served_models["model_dir"]
        status, body = _call(port, "POST", f"/load?model_dir={model_dir}&version=2", headers=AUTH, timeout=120)
        assert status == 200 and body["workers"]["all_converged"]
        golden = json.loads((model_dir / "2" / "metadata.json").read_text())["golden_examples"]
        request = json.dumps({"features": [golden[0]["features"]]}).encode()
        killed, survivor = sorted(worker_pids(master))

        with Load(port, request, clients=8, max_requests=20_000, max_seconds=150, timeout=60) as load:
            wait_until(lambda: load.count() >= 300, 60, "300 requests before the kill")
            killed_at = time.monotonic()
            os.kill(killed, signal.SIGKILL)
            [new] = wait_until(lambda: [p for p in worker_pids(master) if p not in (killed, survivor)], 30,
                               "a new server process")
            answered = load.count()
            wait_until(lambda: load.count() >= answered + 300, 60, "300 requests after the kill")

            def converged():
                workers = _call(port, "GET", "/health", timeout=5)[1]["workers"]
                listed = {w["pid"]: w for w in workers["workers"]}
                return workers["agree"] and sorted(listed) == sorted([survivor, new]) and workers

            workers = wait_until(converged, 120, "the new worker to publish what it serves")
            back = time.monotonic() - killed_at
            answered = load.count()
            wait_until(lambda: load.count() >= answered + 200, 60, "200 more requests")
        outcomes = load.stop()

    failed = [o for o in outcomes if o.status != 200]
    during = [o for o in outcomes if killed_at <= o.started <= killed_at + back]
    figure("requests", len(outcomes), "requests", "8 clients, one of 2 workers killed with SIGKILL")
    figure("failed_requests", len(failed), "requests", "in flight in the killed worker")
    figure("requests_while_replacing", len(during), "requests", "answered by the other worker meanwhile")
    figure("seconds_to_two_workers_again", round(back, 2), "s", "kill to the new worker serving the host's state")
    # Only the clients connected to the killed worker (3 measured; how many of the 8 it held is the kernel's
    # draw), each once, and none once the new worker publishes.
    assert len(failed) <= 8 and all(o.started < killed_at + back for o in failed), failed[:10]
    assert back < 20, back      # measured 9.2 s kill to the new worker publishing the host's state; 2x margin
    assert {o.version for o in outcomes if o.status == 200} == {"2"}
    assert len([o for o in during if o.status == 200]) >= 300   # the host kept serving while it was replaced
    assert {w["default"] for w in workers["workers"]} == {"2"} and workers["count"] == 2
    assert {w["generation"] for w in workers["workers"]} == {workers["generation"]}


def _unit() -> dict:
    """The unit's [Service] settings: Environment= lines gathered into a dict, EnvironmentFile= into a list."""
    service, env, files = {}, {}, []
    for line in UNIT.read_text().splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        elif key == "EnvironmentFile":
            files.append(value)
        else:
            service[key] = value
    return {**service, "env": env, "env_files": files}


def _start_as_the_unit_says(base: Path, port: int, log: Path) -> subprocess.Popen:
    """What systemd runs for ml-pipeline-api, with /opt/ml_pipeline standing at ``base`` and port 8000 at ``port``."""
    unit = _unit()
    here = lambda text: text.replace("/opt/ml_pipeline", str(base))       # noqa: E731
    env = {"PATH": os.environ["PATH"], "HOME": str(base), **{k: here(v) for k, v in unit["env"].items()}}
    for name in unit["env_files"]:          # read in order, the later overriding; "-": it may be missing
        path = Path(here(name.removeprefix("-")))
        if path.exists():
            env |= dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    argv = here(unit["ExecStart"]).replace("--port 8000", f"--port {port}").replace("0.0.0.0", "127.0.0.1").split()
    return subprocess.Popen(argv, cwd=here(unit["WorkingDirectory"]), env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_a_server_run_by_the_systemd_unit_takes_releases_and_comes_back_serving_them(served_models, tmp_path,
                                                                                    figure):
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import Target
    from tasks.deploy.transports import transport_for
    from testkit.net import free_port

    base = tmp_path / "opt" / "ml_pipeline"
    target = Target(name="unit-host", base_dir=base, port=free_port(), workers=2)
    bundles = {v: package_version(served_models["model_dir"] / v, tmp_path / "bundles") for v in ("1", "2")}
    # The first deploy starts the pipeline's own server and lays out current/, run/; the host's venv
    # (built by ensure-venv on a real host, then linked as venv/) is this test's environment.
    base.mkdir(parents=True)
    (base / "venv").symlink_to(Path(sys.prefix))
    assert deploy_to(target, *bundles["1"]).action == "start"
    transport_for(target).host("stop")
    assert os.readlink(base / "current") == "releases/1"

    log = tmp_path / "unit.log"
    proc = _start_as_the_unit_says(base, target.port, log)
    try:
        wait_until(lambda: _health(target.port).get("default_version") == "1", 120, "the unit's server")
        done = deploy_to(target, *bundles["2"])                      # the pipeline hot-loads into it
        assert done.action == "hot-load" and done.smoke.passed and os.readlink(base / "current") == "releases/2"
        os.killpg(proc.pid, signal.SIGKILL)                         # the whole server dies …
        proc.wait()
        killed_at = time.monotonic()
        proc = _start_as_the_unit_says(base, target.port, log)      # … and systemd (Restart=always) starts it
        wait_until(lambda: _health(target.port).get("status") == "healthy", 120, "the restarted server")
        figure("seconds_to_serving_again", round(time.monotonic() - killed_at, 2), "s",
               "master and worker killed; started again as the unit says (RestartSec=1 not included)")
        wait_until(lambda: _health(target.port).get("workers", {}).get("count") == 2, 60, "both workers")
        health = _health(target.port)
        assert health["default_version"] == "2" and health["loaded_versions"] == ["1", "2"]
        assert health["workers"]["expected"] == 2 and health["workers"]["agree"]    # the target's workers: 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)


def _health(port: int) -> dict:
    try:
        return _call(port, "GET", "/health", timeout=2)[1] or {}
    except OSError:
        return {}


def test_the_systemd_unit_verifies_and_restarts_always(tmp_path):
    """The guide's ml-pipeline-api unit: Restart=always, a non-root user, checked by systemd-analyze."""
    text = UNIT.read_text()
    directives = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert directives["Restart"] == "always" and directives["User"] not in ("root", "0")
    assert "SERVING_STATE_FILE" in text and "SERVING_ADMIN_TOKEN_FILE" in text
    # The target's workers reach the unit through run/server.env (host.py start writes it); the operator's
    # /etc file, read after it, may override it.
    files = [v for k, v in (ln.split("=", 1) for ln in text.splitlines() if "=" in ln) if k == "EnvironmentFile"]
    assert files == ["-/opt/ml_pipeline/run/server.env", "-/etc/ml-pipeline-api.env"]
    assert "-m serving" in directives["ExecStart"]
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing; `make test` installs systemd")
    # Verify it as installed on a host: the paths it names exist (this venv stands in for the host's).
    opt = tmp_path / "opt" / "ml_pipeline"
    (opt / "venv" / "bin").mkdir(parents=True)
    (opt / "venv" / "bin" / "python").symlink_to(Path(os.path.realpath(ROOT / ".venv" / "bin" / "python")))
    (opt / "current").mkdir()
    (opt / "run").mkdir()
    unit = tmp_path / "ml-pipeline-api.service"
    unit.write_text(text.replace("/opt/ml_pipeline", str(opt)))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                         timeout=60)
    problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                if "ml-pipeline-api" in ln and "Cannot add dependency job" not in ln]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr
