"""Backup and restore end to end: release twice onto a local host, back up while the registry is written, destroy
the home, restore it elsewhere, then `status` and `rollback` on the restored home, as the how-to says."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.contract.digest import sha256_file
from tasks.backup import verify
from tests.conftest import ROOT, mlflow_client
from tests.flows.conftest import host_status, scenario_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = ROOT / "docs" / "how-to" / "backup-restore.md"


def page_commands() -> list[str]:
    """The how-to's ``python -m flows`` commands, in order, as written."""
    return [line for line in _page_lines() if line.startswith("python -m flows ")]


def _cli(command: str, cwd: Path, env: dict, ok=(0,)) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *command.split()[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode in ok, (command, out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    return out


def _tags(client) -> dict[str, dict[str, str]]:
    return {str(v.version): dict(v.tags) for v in client.search_model_versions("name='test-model'")}


def _tagging(client, stop: threading.Event, done: list) -> None:
    """What a release does to the registry, over and over while the backup runs: tag a version."""
    for n in range(10_000):          # bounded in count; the caller stops it after the backup
        if stop.is_set():
            break
        client.set_model_version_tag("test-model", "2", "backup_probe", str(n))
        done.append(n)


def _stop_host(env: dict, home: Path) -> None:
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    for target in load_targets(env["targets"], home).values():
        transport_for(target).host("stop")


def test_release_twice_back_up_destroy_restore_then_status_and_rollback(prefect_server, tmp_path_factory,
                                                                         demo_frame, figure):
    from prefect.settings import PREFECT_API_URL

    from flows.release import release_flow

    commands = page_commands()
    backup_cmd = next(c for c in commands if c.startswith("python -m flows backup"))
    restore_cmd = next(c for c in commands if c.startswith("python -m flows restore"))
    archive_name = backup_cmd.split("--out ")[1].split()[0]
    new_name = restore_cmd.split("--home ")[1].split()[0]
    with scenario_home(tmp_path_factory, demo_frame, "backup") as (env, data, config):
        home, base = env["home"], Path(env["targets"]).parent
        for _ in range(2):
            release_flow(data=str(data), schema=str(ROOT / "configs/schema.yaml"), config=str(config),
                         feature_list=str(ROOT / "configs/feature_list.csv"), targets=["t1"],
                         targets_file=env["targets"])
        client = mlflow_client(home)[0]
        assert str(client.get_model_version_by_alias("test-model", "champion").version) == "2"
        local = base / "local.yaml"    # the page's commands name no target: the default, `local`, is t1's host
        local.write_text(Path(env["targets"]).read_text().replace("  t1:", "  local:"))
        cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "MLFLOW_"))},
                   "PIPELINE_HOME": str(home), "PIPELINE_CONFIG": str(config), "PIPELINE_TARGETS": str(local),
                   "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}

        stop, tagged = threading.Event(), []
        writer = threading.Thread(target=_tagging, args=(client, stop, tagged))
        writer.start()
        try:
            deadline = time.monotonic() + 60
            while len(tagged) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            started = time.monotonic()
            made = _cli(backup_cmd, base, cli_env)
            backup_s = time.monotonic() - started
            during = len(tagged)
        finally:
            stop.set()
            writer.join(timeout=60)
        assert during >= 3 and len(tagged) > during, "the registry was not written while the backup ran"
        archive = base / archive_name
        assert re.match(rf"backup of {home} \(test-model 2 versions\) written to {archive}: [\d.]+ [kM]B, \d+ files, "
                        r"[\d.]+ s$", made.stdout.strip()), made.stdout
        before = _tags(client)
        probe = int(before["2"].pop("backup_probe"))
        assert 0 <= probe < len(tagged)
        manifest, _links = verify(archive)                 # every SHA-256 verifies
        files = [f["path"] for f in manifest["files"]]
        assert manifest["registry"] == {"test-model": {"versions": ["1", "2"], "aliases": {"champion": "2"}}}
        assert not any(f.startswith(("locks/", "prefect/")) for f in files)

        _stop_host(env, home)
        shutil.rmtree(home)                                   # the home is lost
        new = base / new_name
        started = time.monotonic()
        restored = _cli(restore_cmd, base, cli_env)
        restore_s = time.monotonic() - started
        assert f"as {new}" in restored.stdout and "all SHA-256s verified" in restored.stdout, restored.stdout
        cli_env["PIPELINE_HOME"] = str(new)
        try:
            _check_restored(new, home, before, probe, commands, base, cli_env, env)
        finally:
            _stop_host(env, new)
    figure("archive_size", archive.stat().st_size, "bytes", f"{len(files)} files, two released versions")
    figure("backup_seconds", round(backup_s, 2), "s", "python -m flows backup, while the registry is written")
    figure("restore_seconds", round(restore_s, 2), "s", "python -m flows restore, verified, into a new directory")


def _check_restored(new: Path, old: Path, before: dict, probe: int, commands: list[str], base: Path, cli_env: dict,
                    env: dict) -> None:
    import mlflow

    from tasks.registry.links import tracking_uri

    client, uri = mlflow_client(new)
    after = _tags(client)
    assert 0 <= int(after["2"].pop("backup_probe")) <= probe     # a state the registry was in, not a torn one
    moved = {v: {k: t.replace(f"{old}/", f"{new}/") for k, t in tags.items()} for v, tags in before.items()}
    assert after == moved                                      # every audit tag, the home's paths moved
    for key in ("promoted_reason", "previous_champion", "promoted_at", "promoted_by", "bundle_sha256",
                "metadata_sha256", "release", "gate_comparison", "cv_metrics"):
        assert key in after["2"], key
    assert after["2"]["previous_champion"] == "1"
    # The registry's artifacts resolve under the new home: the old one is gone.
    with tracking_uri(uri):
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/test-model/1",
                                                       dst_path=str(base / "fetched")))
    metadata = next(got.glob("artifacts/*/metadata.json"))
    assert sha256_file(metadata) == after["1"]["metadata_sha256"]
    con = sqlite3.connect(new / "mlflow" / "mlflow.db")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()

    status = next(c for c in commands if c.startswith("python -m flows status"))
    shown = _cli(status, base, cli_env, ok=(4,))                # the host is not running: it differs
    assert "champion = version 2" in shown.stdout, shown.stdout
    rollback = next(c for c in commands if c.startswith("python -m flows rollback"))
    back = _cli(rollback, base, cli_env)
    assert "champion: 2 -> 1" in back.stdout, back.stdout
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    assert host_status({**env, "home": new})["default_version"] == "1"
    assert _cli(status, base, cli_env).returncode == 0


def test_the_team_registry_round_trips_through_pg_dump_and_pg_restore(tmp_path, figure):
    """The how-to's `pg_dump` / `pg_restore` commands, as written (the host and password put in), against a
    PostgreSQL cluster holding an MLflow registry: a model deleted after the dump comes back with its versions,
    its champion alias and its audit tags."""
    from mlflow import MlflowClient

    from tests.team.stack import start_postgres

    dump, restore_ = (next(c for c in _page_lines() if c.startswith(w)) for w in ("pg_dump ", "pg_restore "))
    pg = start_postgres()
    try:
        uri = pg.url("psycopg2", "mlflow")
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model("test-model")
        for v in ("1", "2"):
            client.create_model_version("test-model", f"mlflow-artifacts:/models/{v}", tags={"release": f"1.{v}.0"})
        client.set_model_version_tag("test-model", "2", "previous_champion", "1")
        client.set_model_version_tag("test-model", "2", "promoted_reason", "release 1.2.0 passed the gate")
        client.set_registered_model_alias("test-model", "champion", "2")
        env = {**os.environ, "PG_PASSWORD": pg.password}
        started = time.monotonic()
        for command in (dump, "DELETE", restore_):
            if command == "DELETE":                                       # the registry is lost
                client.delete_registered_model("test-model")
                assert client.search_registered_models() == []
                continue
            out = subprocess.run(["/bin/bash", "-c", command.replace("db.internal:5432", f"127.0.0.1:{pg.port}")],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, (command.split()[0], out.stderr[-2000:])
        seconds = time.monotonic() - started
        back = MlflowClient(tracking_uri=uri, registry_uri=uri)
        champion = back.get_model_version_by_alias("test-model", "champion")
        assert str(champion.version) == "2" and champion.tags == {
            "release": "1.2.0", "previous_champion": "1", "promoted_reason": "release 1.2.0 passed the gate"}
        assert back.get_model_version("test-model", "1").tags == {"release": "1.1.0"}
    finally:
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)
    figure("pg_dump_restore_seconds", round(seconds, 2), "s", "pg_dump -Fc, then pg_restore --clean, two versions")
    figure("pg_dump_size", (tmp_path / "mlflow.dump").stat().st_size, "bytes", "the MLflow schema, two versions")


def _page_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
