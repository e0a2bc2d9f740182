"""The deploy half on the local target, for real: bundle, host process, smoke test, registry aliases."""

from __future__ import annotations

import socket
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.errors import IntegrityError, SmokeTestFailed, TransferError
from tasks.registry import MlflowRegistry
from tasks.settings import load_settings
from tests.conftest import ROOT, mlflow_client
from tests.flows.conftest import artifacts, wait_for_event
from tests.flows.conftest import host_status as _host_status
from tests.net import free_port


def _release(env, demo_csv, schema_path, feature_list_path, fast_config):
    from flows.release import release_flow

    return release_flow(data=str(demo_csv), schema=str(schema_path), feature_list=str(feature_list_path),
                        config=str(fast_config), targets=["t1"], targets_file=env["targets"])


def test_release_deploy_promote_rollback(prefect_server, target_env, demo_csv, schema_path, feature_list_path,
                                         fast_config, monkeypatch):
    env = target_env
    first = _release(env, demo_csv, schema_path, feature_list_path, fast_config)
    d = first["deploy"]
    assert d["champion_before"] is None and d["champion_after"] == "1"
    (dep,) = d["deployments"]
    assert dep["action"] == "start" and dep["version"] == "1" and dep["smoke"]["passed"]
    assert dep["smoke"]["golden_max_abs_diff"] <= 1e-6 and dep["smoke"]["latency_ms_p50"] > 0
    assert (env["home"] / "bundles" / "1.0.0.zip").exists()
    client = mlflow_client(env["home"])[0]
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    v1 = client.get_model_version("test-model", "1")
    assert v1.tags["promoted_reason"].startswith("release 1.0.0") and v1.tags["bundle_sha256"] == d["bundle"]["sha256"]
    assert {a.path for a in client.list_artifacts(v1.run_id, "bundle")} == {"bundle/1.0.0.zip"}

    second = _release(env, demo_csv, schema_path, feature_list_path, fast_config)
    (dep2,) = second["deploy"]["deployments"]
    assert dep2["action"] == "hot-load" and dep2["previous_version"] == "1"
    assert second["deploy"]["champion_before"] == "1" and second["deploy"]["champion_after"] == "2"
    assert client.get_model_version("test-model", "2").tags["previous_champion"] == "1"
    status = _host_status(env)
    assert status["default_version"] == "2" and status["loaded_versions"] == ["1", "2"]

    # A second target that fails rolls the first one back (Prefect transaction rollback hooks).
    from flows.deploy import deploy_flow

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        both = env["home"] / "two-targets.yaml"
        both.write_text(open(env["targets"]).read() + f"  busy:\n    transport: local\n    base_dir: targets/busy\n"
                        f"    port: {squatter.getsockname()[1]}\n")
        with pytest.raises(TransferError, match="target busy: start: port .* is in use"):
            deploy_flow(version="1", targets=["t1", "busy"], targets_file=str(both), config=str(fast_config))
    assert _host_status(env)["default_version"] == "2"
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "2"

    # A smoke test that fails puts the host back and leaves the registry alone.
    from tasks import deploy as deploy_mod
    from tasks.smoke import SmokeReport

    monkeypatch.setattr(deploy_mod, "smoke_test", lambda target, url, metadata: SmokeReport(
        target, url, metadata.version, False, ["/predict: golden examples off by 3.00e-01 (injected)"]))
    with pytest.raises(SmokeTestFailed, match="injected"):
        _release(env, demo_csv, schema_path, feature_list_path, fast_config)
    report = artifacts("release-report-test-model")[0].data     # the failed release still reports
    assert "## Deployment FAILED" in report and "injected" in report and "| train |" in report
    monkeypatch.undo()
    monkeypatch.setenv("PIPELINE_HOME", str(env["home"]))
    assert _host_status(env)["default_version"] == "2"
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "2"

    from flows.deploy import rollback_flow

    back = rollback_flow(target="t1", targets_file=env["targets"], config=str(fast_config), reason="test rollback")
    assert back["champion_before"] == "2" and back["champion_after"] == "1"
    assert back["deployment"]["action"] == "activate" and back["deployment"]["smoke"]["passed"]
    assert _host_status(env)["default_version"] == "1"
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    assert client.get_model_version("test-model", "1").tags["rolled_back_to_reason"] == "test rollback"

    # A release (version 4; 3 failed its smoke test above) whose check after promotion fails: the
    # champion HAS moved (to 4), a critical alarm names
    # target and version, and both reports say so.
    import flows.deploy
    from tasks.alarms import CRITICAL
    from tasks.errors import PostPromotionCheckFailed

    since = datetime.now(UTC)
    monkeypatch.setattr(flows.deploy, "smoke_test", lambda target, url, metadata: SmokeReport(
        target, url, metadata.version, False, ["/health: 503 (injected after promotion)"]))
    with pytest.raises(PostPromotionCheckFailed, match="version 4 was promoted to champion, but the check after"):
        _release(env, demo_csv, schema_path, feature_list_path, fast_config)
    monkeypatch.undo()
    monkeypatch.setenv("PIPELINE_HOME", str(env["home"]))
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "4"
    event = wait_for_event(CRITICAL, since=since, target="t1", version="4")
    assert "injected after promotion" in event["payload"]["reason"]
    report = artifacts("release-report-test-model")[0].data
    assert "## Check after promotion FAILED" in report and "(alias: champion)" in report
    assert "1 critical alarm(s) sent" in artifacts("deploy-report-test-model")[0].data

    # The alarm's rollback (as the trigger starts it), then a second alarm about the same version: the
    # champion already moved back and the host serves version 1, so nothing changes.
    v1_export = client.get_model_version("test-model", "1").tags["export_version"]
    v4_export = client.get_model_version("test-model", "4").tags["export_version"]
    alarm = {"target": "t1", "targets_file": env["targets"], "config": str(fast_config), "failing_version": "4"}
    back = rollback_flow(**alarm, reason="critical alarm: injected")
    assert (back["action"], back["champion_before"], back["champion_after"]) == ("rolled back", "4", "1")
    assert _host_status(env)["default_version"] == v1_export
    again = rollback_flow(**alarm, reason="critical alarm: again")
    assert (again["action"], again["champion_after"]) == ("skipped", "1")
    assert client.get_model_version("test-model", "1").tags["rolled_back_to_reason"] == "critical alarm: injected"
    # An alarm from a target that still serves the failing version (the alias moved back for another
    # target's alarm): that target is switched to the champion; the registry is not touched.
    from tasks.targets import load_targets, transport_for

    transport_for(load_targets(env["targets"], env["home"])["t1"]).host("activate", "--version", v4_export)
    aligned = rollback_flow(**alarm, reason="critical alarm: other target")
    assert (aligned["action"], aligned["champion_after"]) == ("aligned", "1")
    assert _host_status(env)["default_version"] == v1_export
    assert [a.data.splitlines()[0].rsplit(": ", 1)[1] for a in artifacts("rollback-report-test-model")[:3]] == \
        ["aligned", "skipped", "rolled back"]
    # Versions rolled back from (2 and 4) are no longer the default candidate of a deploy or promotion.
    registry = MlflowRegistry(load_settings(str(fast_config)))
    assert str(registry.latest_blessed().version) == "3"

    # A worker on another machine has no export directory: it takes the export from the registry,
    # checked file by file against metadata.json before anything uses it.
    export = Path(client.get_model_version("test-model", "1").tags["model_dir"])
    export.rename(export.with_name("moved-away"))
    cache = env["home"] / "registry-cache"
    fetched = registry.export_dir(registry.get_version("1"), cache)
    assert fetched.is_relative_to(cache) and (fetched / "calibrator.pkl").exists()
    (fetched / "calibrator.pkl").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="calibrator.pkl has SHA-256"):
        registry.export_dir(registry.get_version("1"), cache)


def test_bundles_are_deterministic_and_checked_on_the_host(served_models, tmp_path):
    from tasks.deploy import package_version
    from tasks.targets import Target, transport_for

    model_dir = served_models["model_dir"] / "1"
    a, meta = package_version(model_dir, tmp_path / "a")
    b, _ = package_version(model_dir, tmp_path / "b")
    assert a.sha256 == b.sha256 and a.path.read_bytes() == b.path.read_bytes()
    with zipfile.ZipFile(a.path) as zf:
        names = zf.namelist()
    assert names[-1] == "MANIFEST" and "serving/app.py" in names and "requirements.txt" in names
    assert "model/test-model/1/saved_model/saved_model.pb" in names and "configs/schema.yaml" in names

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(a.path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"#" if item.filename == "serving/app.py" else data)
    target = Target(name="t", base_dir=tmp_path / "host", port=free_port())
    host = transport_for(target)
    with pytest.raises(TransferError, match="checksum mismatch.*serving/app.py"):
        host.host("unpack", "--bundle", str(tampered), "--version", "1")
    assert not (tmp_path / "host" / "releases" / "1").exists()
    assert host.host("unpack", "--bundle", str(a.path), "--version", "1")["reused"] is False
    assert host.host("unpack", "--bundle", str(a.path), "--version", "1")["reused"] is True


def test_port_in_use_is_a_clear_error(served_models, tmp_path):
    from tasks.deploy import deploy_to, package_version
    from tasks.targets import Target

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

    from tasks.deploy import deploy_to, package_version
    from tasks.targets import load_targets

    env = {**os.environ, "PIPELINE_HOME": str(target_env["home"])}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "flows", "status", "--target", "t1", "--targets", target_env["targets"]]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "serves nothing" in out.stdout      # nothing promoted, nothing served
    # A host serving a version the registry never promoted is flagged.
    bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
    deploy_to(load_targets(target_env["targets"], target_env["home"])["t1"], bundle, meta)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 4 and "serves 1" in out.stdout and "DIFFERS" in out.stdout


def test_host_venv_is_created_once_and_reused_while_requirements_are_unchanged(tmp_path):
    """serving/host.py ensure-venv, for real (an empty requirements file keeps pip off the network)."""
    import json
    import subprocess
    import sys

    base = tmp_path / "host"
    release = base / "releases" / "1"
    release.mkdir(parents=True)
    (release / "requirements.txt").write_text("# nothing to install\n")

    def ensure():
        out = subprocess.run([sys.executable, str(ROOT / "serving" / "host.py"), "ensure-venv", "--base-dir",
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
    assert not list((base / "venvs").glob(".*.building"))
