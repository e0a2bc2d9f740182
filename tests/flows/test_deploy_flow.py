"""The deploy half on the local target, for real: bundle, host process, smoke test, registry aliases."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.constants import ALARM_CRITICAL
from tasks.errors import (
    ArtifactIntegrityError,
    LockTimeout,
    PostPromotionCheckFailed,
    RestoreFailed,
    SmokeTestFailed,
    TransferError,
)
from tasks.registry import MlflowRegistry
from tasks.settings import load_settings
from testkit.net import free_port
from tests.conftest import ROOT, mlflow_client
from tests.flows.conftest import Steps, artifacts, scenario_home, wait_for_event
from tests.flows.conftest import host_status as _host_status

pytestmark = pytest.mark.integration


def _release(env, demo_csv, schema_path, feature_list_path, fast_config):
    from flows.release import release_flow

    return release_flow(data=str(demo_csv), schema=str(schema_path), feature_list=str(feature_list_path),
                        config=str(fast_config), targets=["t1"], targets_file=env["targets"])


class History(Steps):
    """One model's release history on target t1 (see ``Steps``). Releases: 1 and 2 succeed, 3 fails
    its smoke test, 4 is promoted and then fails the check after promotion."""

    STEPS = ("first", "second", "busy_target", "unrestorable", "failed_smoke", "rollback", "post_promotion", "alarms")

    def __init__(self, env: dict, data: Path, schema: Path, features: Path, config: Path) -> None:
        super().__init__()
        self.env, self.data, self.schema, self.features, self.config = env, data, schema, features, config
        self.client = mlflow_client(env["home"])[0]

    def release(self):
        return _release(self.env, self.data, self.schema, self.features, self.config)

    def champion(self) -> str:
        return str(self.client.get_model_version_by_alias("test-model", "champion").version)

    def served(self) -> str:
        return _host_status(self.env)["default_version"]

    def _first(self, patch):
        return self.release()

    def _second(self, patch):
        summary = self.release()
        return {"summary": summary, "status": _host_status(self.env)}

    def _busy_target(self, patch):
        """A second target that fails rolls the first one back (Prefect transaction rollback hooks)."""
        failure = self._deploy_beside_a_busy_target(TransferError)
        return {"error": failure, "served": self.served(), "champion": self.champion(),
                "report": artifacts("deploy-report-test-model")[0]}

    def _deploy_beside_a_busy_target(self, error: type[Exception]) -> Exception:
        """Deploy version 1 to t1 and to a target whose port another process holds; return the error."""
        from flows.deploy import deploy_flow

        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            both = self.env["home"] / "two-targets.yaml"
            both.write_text(open(self.env["targets"]).read() + "  busy:\n    transport: local\n    base_dir: "
                            f"targets/busy\n    port: {squatter.getsockname()[1]}\n")
            with pytest.raises(error) as failure:
                deploy_flow(version="1", targets=["t1", "busy"], targets_file=str(both), config=str(self.config))
        return failure.value

    def _unrestorable(self, patch):
        """The same failure, but t1's host refuses to be put back (its `activate` fails): the flow says so."""
        from tasks.deploy import deploy as deploy_mod
        from tasks.deploy.targets import load_targets
        from tasks.deploy.transports import transport_for

        class Refusing:
            def __init__(self, real):
                self.real = real

            def put(self, bundle):
                return self.real.put(bundle)

            def host(self, *args):
                if args[0] == "activate":
                    raise TransferError(f"target {self.real.target.name}: activate: host unreachable (injected)")
                return self.real.host(*args)

        patch.setattr(deploy_mod, "transport_for", lambda target: Refusing(transport_for(target)))
        failure = self._deploy_beside_a_busy_target(RestoreFailed)
        patch.undo()
        out = {"error": failure, "served": self.served(), "champion": self.champion(),
               "report": artifacts("deploy-report-test-model")[0]}
        # Put t1 back by hand, as the message says, for the steps after this one.
        transport_for(load_targets(self.env["targets"], self.env["home"])["t1"]).host("activate", "--version", "2")
        return out

    def _failed_smoke(self, patch):
        """Release 3's smoke test fails (injected): the host goes back, the registry is left alone."""
        from tasks.deploy import deploy as deploy_mod
        from tasks.deploy.smoke import SmokeReport

        patch.setattr(deploy_mod, "smoke_test", lambda target, url, metadata: SmokeReport(
            target, url, metadata.version, False, ["/predict: golden examples off by 3.00e-01 (injected)"]))
        with pytest.raises(SmokeTestFailed) as failure:
            self.release()
        report = artifacts("release-report-test-model")[0].data     # the failed release still reports
        patch.undo()
        return {"error": failure.value, "report": report, "served": self.served(), "champion": self.champion()}

    def _rollback(self, patch):
        from flows.deploy import rollback_flow

        back = rollback_flow(target="t1", targets_file=self.env["targets"], config=str(self.config),
                             reason="test rollback")
        return {"result": back, "served": self.served(), "champion": self.champion()}

    def _post_promotion(self, patch):
        """Release 4 is promoted, then its check after promotion fails (injected)."""
        import flows.notify
        from tasks.deploy.smoke import SmokeReport

        since = datetime.now(UTC)
        patch.setattr(flows.notify, "smoke_test", lambda target, url, metadata: SmokeReport(
            target, url, metadata.version, False, ["/health: 503 (injected after promotion)"]))
        with pytest.raises(PostPromotionCheckFailed) as failure:
            self.release()
        patch.undo()
        return {"error": failure.value, "since": since, "champion": self.champion(),
                "release_report": artifacts("release-report-test-model")[0].data,
                "deploy_report": artifacts("deploy-report-test-model")[0].data}

    def _alarms(self, patch):
        """The alarm's rollback (as the trigger starts it), a second alarm about the same version, and an
        alarm from a target that still serves the failing version."""
        from flows.deploy import rollback_flow
        from tasks.deploy.targets import load_targets
        from tasks.deploy.transports import transport_for

        exports = {v: self.client.get_model_version("test-model", v).tags["export_version"] for v in ("1", "4")}
        alarm = {"target": "t1", "targets_file": self.env["targets"], "config": str(self.config),
                 "failing_version": "4"}
        out = {"exports": exports}
        out["first"] = rollback_flow(**alarm, reason="critical alarm: injected")
        out["served_after_first"] = self.served()
        out["again"] = rollback_flow(**alarm, reason="critical alarm: again")
        out["rollback_reason_of_1"] = self.client.get_model_version("test-model", "1").tags["rolled_back_to_reason"]
        transport_for(load_targets(self.env["targets"], self.env["home"])["t1"]).host(
            "activate", "--version", exports["4"])
        out["aligned"] = rollback_flow(**alarm, reason="critical alarm: other target")
        out["served_after_aligned"] = self.served()
        out["reports"] = [a.data.splitlines()[0].rsplit(": ", 1)[1]
                          for a in artifacts("rollback-report-test-model")[:3]]
        return out


@pytest.fixture(scope="module")
def history(prefect_server, tmp_path_factory, demo_frame):
    with scenario_home(tmp_path_factory, demo_frame, "history") as (env, data, config):
        yield History(env, data, ROOT / "configs" / "schema.yaml", ROOT / "configs" / "feature_list.csv", config)


def test_first_release_starts_the_server_and_promotes(history):
    d = history.at("first")["deploy"]
    assert d["champion_before"] is None and d["champion_after"] == "1"
    (dep,) = d["deployments"]
    assert dep["action"] == "start" and dep["version"] == "1" and dep["smoke"]["passed"]
    # Single-row p50 measured 1.7 ms here (bench/README.md: 1.20-1.65 ms, 1 client); 2x margin.
    assert dep["smoke"]["golden_max_abs_diff"] <= 1e-6 and 0 < dep["smoke"]["latency_ms_p50"] < 3.5
    assert (history.env["home"] / "bundles" / "test-model-1.zip").exists()
    client = history.client
    v1 = client.get_model_version("test-model", "1")
    assert v1.tags["promoted_reason"].startswith("release 1.0.0") and v1.tags["bundle_sha256"] == d["bundle"]["sha256"]
    assert {a.path for a in client.list_artifacts(v1.run_id, "bundle")} == {"bundle/test-model-1.zip"}


def test_second_release_hot_loads_beside_the_first(history):
    second = history.at("second")
    deploy = second["summary"]["deploy"]
    (dep2,) = deploy["deployments"]
    assert dep2["action"] == "hot-load" and dep2["previous_version"] == "1"
    assert deploy["champion_before"] == "1" and deploy["champion_after"] == "2"
    assert history.client.get_model_version("test-model", "2").tags["previous_champion"] == "1"
    assert second["status"]["default_version"] == "2" and second["status"]["loaded_versions"] == ["1", "2"]


@pytest.mark.faults
def test_a_failing_second_target_rolls_the_first_back(history):
    busy = history.at("busy_target")
    assert re.search("target busy: start: port .* is in use", str(busy["error"]))
    assert busy["served"] == "2" and busy["champion"] == "2"
    assert "target t1 restored to version 2" in busy["report"].data
    assert "champion unchanged (2)" in busy["report"].data and "could NOT" not in busy["report"].data
    assert busy["report"].description == "test-model v1 on t1, busy: FAILED; champion unchanged (2)"


def test_a_host_that_cannot_be_put_back_is_reported_as_such(history):
    """Restoring t1 fails (its host refuses): the error, the report and its title say that t1 was NOT put back
    (and what failed), not "targets restored"; the champion did not move."""
    stuck = history.at("unrestorable")
    text = str(stuck["error"])
    assert "target t1 could NOT be put back on version 2" in text and "host unreachable (injected)" in text
    assert re.search("target busy: start: port .* is in use", text) and "champion unchanged (2)" in text
    assert "could NOT be put back on version 2" in stuck["report"].data
    assert "flows status --target" in stuck["report"].data and "champion unchanged (2)" in stuck["report"].data
    assert stuck["report"].description == "test-model v1 on t1, busy: FAILED; t1 NOT put back; champion unchanged (2)"
    assert stuck["served"] == "1" and stuck["champion"] == "2"     # what the report said: t1 still serves 1


@pytest.mark.faults
def test_a_failed_smoke_test_restores_the_host_and_leaves_the_registry(history):
    failed = history.at("failed_smoke")
    assert "injected" in str(failed["error"]) and "target t1 restored to version 2" in str(failed["error"])
    assert "## Deployment FAILED" in failed["report"] and "injected" in failed["report"]
    assert "- target t1 restored to version 2" in failed["report"] and "- champion unchanged (2)" in failed["report"]
    assert "| train |" in failed["report"]
    assert failed["served"] == "2" and failed["champion"] == "2"


def test_rollback_serves_the_previous_champion_then_moves_the_alias(history):
    back = history.at("rollback")
    assert back["result"]["champion_before"] == "2" and back["result"]["champion_after"] == "1"
    assert back["result"]["deployment"]["action"] == "activate" and back["result"]["deployment"]["smoke"]["passed"]
    assert back["served"] == "1" and back["champion"] == "1"
    assert history.client.get_model_version("test-model", "1").tags["rolled_back_to_reason"] == "test rollback"


def test_a_failed_check_after_promotion_alarms_and_says_the_champion_moved(history):
    """Version 4 (3 failed its smoke test): the champion HAS moved, a critical alarm names target and
    version, and both reports say so."""
    post = history.at("post_promotion")
    assert "version 4 was promoted to champion, but the check after" in str(post["error"])
    assert post["champion"] == "4"
    event = wait_for_event(ALARM_CRITICAL, since=post["since"], target="t1", version="4")
    assert "injected after promotion" in event["payload"]["reason"]
    assert "## Check after promotion FAILED" in post["release_report"] and "(alias: champion)" in post["release_report"]
    assert "1 critical alarm(s) sent" in post["deploy_report"]


def test_a_burst_of_alarms_rolls_back_once_and_aligns_every_target(history):
    """The alarm's rollback; a second alarm about the same version finds the champion moved back and the
    host on version 1 and changes nothing; an alarm from a target that still serves the failing version
    switches that target to the champion without touching the registry."""
    alarms = history.at("alarms")
    first, again, aligned = alarms["first"], alarms["again"], alarms["aligned"]
    assert (first["action"], first["champion_before"], first["champion_after"]) == ("rolled back", "4", "1")
    assert alarms["served_after_first"] == alarms["exports"]["1"]
    assert (again["action"], again["champion_after"]) == ("skipped", "1")
    assert alarms["rollback_reason_of_1"] == "critical alarm: injected"
    assert (aligned["action"], aligned["champion_after"]) == ("aligned", "1")
    assert alarms["served_after_aligned"] == alarms["exports"]["1"]
    assert alarms["reports"] == ["aligned", "skipped", "rolled back"]


def test_versions_rolled_back_from_are_no_longer_default_candidates(history):
    history.at("alarms")     # 2 and 4 were rolled back from
    registry = MlflowRegistry(load_settings(str(history.config)))
    assert str(registry.latest_blessed().version) == "3"


@pytest.mark.faults
def test_a_worker_elsewhere_takes_the_export_from_the_registry_checked(history):
    """A worker on another machine has no export directory: it takes the export from the registry,
    checked file by file against metadata.json before anything uses it."""
    history.at("alarms")     # the last step: moving version 1's export away changes nothing it checks
    registry = MlflowRegistry(load_settings(str(history.config)))
    export = Path(history.client.get_model_version("test-model", "1").tags["model_dir"])
    export.rename(export.with_name("moved-away"))
    cache = history.env["home"] / "registry-cache"
    fetched = registry.export_dir(registry.get_version("1"), cache)
    assert fetched.is_relative_to(cache) and (fetched / "calibrator.pkl").exists()
    (fetched / "calibrator.pkl").write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="calibrator.pkl has SHA-256"):
        registry.export_dir(registry.get_version("1"), cache)
    # metadata.json lists the other files' hashes, so it is checked against what the registry recorded:
    # an edit that keeps it self-consistent (another release number) is refused too.
    shutil.rmtree(cache)
    fetched = registry.export_dir(registry.get_version("1"), cache)
    meta = json.loads((fetched / "metadata.json").read_text())
    (fetched / "metadata.json").write_text(json.dumps({**meta, "release": "9.9.9"}))
    with pytest.raises(ArtifactIntegrityError, match="metadata.json: SHA-256 .* the registry recorded"):
        registry.export_dir(registry.get_version("1"), cache)


@pytest.mark.faults
def test_bundles_are_deterministic_and_checked_on_the_host(served_models, tmp_path):
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import Target
    from tasks.deploy.transports import transport_for

    model_dir = served_models["model_dir"] / "1"
    a, meta = package_version(model_dir, tmp_path / "a")
    b, _ = package_version(model_dir, tmp_path / "b")
    assert a.sha256 == b.sha256 and a.path.read_bytes() == b.path.read_bytes()
    with zipfile.ZipFile(a.path) as zf:
        names = zf.namelist()
    assert names[-1] == "MANIFEST" and "serving/api/app.py" in names and "requirements.txt" in names
    assert "model/test-model/1/saved_model/saved_model.pb" in names and "configs/schema.yaml" in names

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(a.path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"#" if item.filename == "serving/api/app.py" else data)
    target = Target(name="t", base_dir=tmp_path / "host", port=free_port())
    host = transport_for(target)
    with pytest.raises(TransferError, match="checksum mismatch.*serving/api/app.py"):
        host.host("unpack", "--bundle", str(tampered), "--version", "1")
    assert not (tmp_path / "host" / "releases" / "1").exists()
    assert host.host("unpack", "--bundle", str(a.path), "--version", "1")["reused"] is False
    assert host.host("unpack", "--bundle", str(a.path), "--version", "1")["reused"] is True


@pytest.mark.faults
def test_port_in_use_is_a_clear_error(served_models, tmp_path):
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import Target

    bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        target = Target(name="busy", base_dir=tmp_path / "host", port=port)
        with pytest.raises(TransferError, match=f"target busy: start: port {port} is in use"):
            deploy_to(target, bundle, meta)


def test_cli_status_flags_a_difference(target_env, served_models, tmp_path):
    import os
    import subprocess
    import sys

    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import load_targets

    env = {**os.environ, "PIPELINE_HOME": str(target_env["home"])}
    env.pop("MLFLOW_TRACKING_URI", None)
    # The only registered model is the one status shows (no --config, no --model); it has no champion yet.
    MlflowRegistry(load_settings(None, env=env)).client.create_registered_model("credit-risk")
    cmd = [sys.executable, "-m", "flows", "status", "--target", "t1", "--targets", target_env["targets"]]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    # Nothing promoted, nothing ever released to t1: "not deployed", not a failure.
    assert out.returncode == 0 and "t1: not deployed (no version released to it yet)" in out.stdout
    # A host serving a version the registry never promoted is flagged.
    bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
    deploy_to(load_targets(target_env["targets"], target_env["home"])["t1"], bundle, meta)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 4 and "serves 1" in out.stdout and "DIFFERS" in out.stdout


def test_host_venv_is_created_once_and_reused_while_requirements_are_unchanged(tmp_path):
    """The host agent's ensure-venv, for real (empty requirements keep pip off the network); the environment
    is named after the requirements and the constraints."""
    import json
    import subprocess
    import sys

    from tasks.constants import HOST_AGENT
    from tasks.deploy.package import build_host_agent

    base = tmp_path / "host"
    release = base / "releases" / "1"
    release.mkdir(parents=True)
    (release / "requirements.txt").write_text("# nothing to install\n")

    def ensure():
        out = subprocess.run([sys.executable, str(build_host_agent(tmp_path / HOST_AGENT)), "ensure-venv", "--base-dir",
                              str(base), "--version", "1", "--timeout", "300"], capture_output=True, text=True,
                             timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = ensure()
    assert first["ok"] and first["created"] and subprocess.run([first["python"], "-c", "import sys"]).returncode == 0
    again = ensure()
    assert again["created"] is False and again["python"] == first["python"]
    (release / "requirements.txt").write_text("# changed\n")
    changed = ensure()
    assert changed["created"] and changed["python"] != first["python"]
    (release / "constraints.txt").write_text("# the bundle's pins (pip install -c)\n")
    pinned = ensure()
    assert pinned["created"] and pinned["python"] != changed["python"]
    assert not list((base / "venvs").glob(".*.building"))


def test_paths_with_spaces_and_no_pipeline_secrets_on_the_host(served_models, tmp_path, monkeypatch):
    """The host's /load query is URL-encoded (a path with a space used to break it), and the server it
    starts does not inherit the pipeline's credentials."""
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import Target
    from tasks.deploy.transports import transport_for

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    target = Target(name="spaced", base_dir=tmp_path / "a host dir", port=free_port())
    try:
        for version in ("1", "2"):
            bundle, meta = package_version(served_models["model_dir"] / version, tmp_path / "bundles")
            done = deploy_to(target, bundle, meta)
        assert done.action == "hot-load" and done.version == "2"
        pid = (target.base_dir / "run" / "server.pid").read_text().strip()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(e.startswith(b"AWS_SECRET_ACCESS_KEY=") for e in environ)
        # The admin token is read from the host's 0600 file, never put in the server's environment.
        assert not any(e.startswith(b"SERVING_ADMIN_TOKEN=") for e in environ)
        assert f"SERVING_ADMIN_TOKEN_FILE={target.base_dir / 'run' / 'admin_token'}".encode() in environ
    finally:
        transport_for(target).host("stop")


def _impatient_config(tmp_path) -> Path:
    from tests.conftest import FAST_CONFIG

    path = tmp_path / "impatient.yaml"
    path.write_text(FAST_CONFIG + "lock_timeout_s: 0\n")
    return path


def test_the_cli_rollback_waits_for_the_models_serving_lock(prefect_server, target_env, tmp_path):
    """`python -m flows rollback` does not go through the rollback deployment (one run at a time), so the flow
    itself takes the model's serving lock, as every deploy and deployment rollback does: while another run
    holds it, the CLI's rollback waits (here: not at all) and exits 6 naming that run; nothing moves."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from tasks.locks import held

    env = {**os.environ, "PIPELINE_HOME": str(target_env["home"]), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "flows", "rollback", "--target", "t1", "--targets", target_env["targets"],
           "--config", str(_impatient_config(tmp_path))]
    # Registered, without a champion: the command gets past the checks before Prefect starts to the lock.
    MlflowRegistry(load_settings(None, env=env)).client.create_registered_model("test-model")
    with held(target_env["home"], "test-model", "serving", "deploy of version 9 (held by the test)", 0):
        busy = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert busy.returncode == 6, busy.stderr[-3000:]
    last = busy.stderr.strip().splitlines()[-1]     # the CLI's own message (Prefect logs the failed run above it)
    assert last.startswith("error: test-model: rollback on t1 (manual rollback) waited 0 s for ")
    assert "held by deploy of version 9 (held by the test) (pid " in last
    free = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert free.returncode == 2 and "has no champion to roll back from" in free.stderr   # got past the lock


def test_a_team_wide_concurrency_limit_is_held_too(prefect_server, target_env, tmp_path):
    """Workers on other machines do not share a pipeline home: where the Prefect server has the global
    concurrency limit pipeline-serving-<model>, a rollback also needs its slot."""
    import shlex
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL

    from flows.deploy import rollback_flow

    name = "pipeline-serving-test-model"
    # Created with the team setup's command, as written (its model is credit-risk, this one test-model).
    page = (ROOT / "docs" / "how-to" / "team-setup.md").read_text()
    (line,) = [ln.split("   #")[0] for ln in page.splitlines()
               if ln.startswith("prefect gcl create pipeline-serving")]
    argv = shlex.split(line.replace("credit-risk", "test-model"))
    out = subprocess.run([str(Path(sys.executable).with_name("prefect")), *argv[1:]], capture_output=True, text=True,
                         env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, timeout=120)
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-1000:]
    try:
        with concurrency(name, occupy=1), pytest.raises(LockTimeout, match=f"global concurrency limit '{name}'"):
            rollback_flow(target="t1", targets_file=target_env["targets"], config=str(_impatient_config(tmp_path)))
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)
