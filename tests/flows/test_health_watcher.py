"""The health watcher with real processes: ``python -m flows watch`` as the guide runs it (the shipped
configs/monitoring.yaml: every 30 s, 3 attempts 2 s apart) on a fresh pipeline home. A target never deployed
is "not deployed" for the watcher, the ``health`` flow and ``status``, and pages nobody; once a version was
deployed, a server killed with SIGKILL pages (PagerDuty) within a minute — the detection time is measured."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from testkit.receiver import Receiver
from tests.conftest import ROOT
from tests.faults.conftest import wait_until
from tests.flows.conftest import host_status, local_target

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _heartbeat(home: Path, after_round: int = 0) -> dict | None:
    from tasks.monitoring.liveness import read_heartbeat

    beat = read_heartbeat(home / "monitoring")
    return beat if beat and beat["rounds"] > after_round else None


def _kill_server(env: dict) -> None:
    """SIGKILL the target's server: gunicorn's master and every worker (nothing restarts a local target's)."""
    master = psutil.Process(host_status(env)["pid"])
    for proc in [*master.children(recursive=True), master]:
        proc.kill()


def test_a_fresh_stack_pages_nobody_and_a_killed_server_pages_within_a_minute(prefect_server, served_models, tmp_path,
                                                                             monkeypatch, figure):
    from flows.commands_serving import _target_status
    from flows.health import health_flow
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import load_targets
    from tasks.monitoring.settings import load_monitoring

    cfg = load_monitoring(ROOT / "configs" / "monitoring.yaml", env={})       # what the watcher runs with
    home = tmp_path / "home"
    with local_target(home, tmp_path, monkeypatch) as env, Receiver() as rx:
        watcher_env = {**os.environ, "PIPELINE_HOME": str(home), "PIPELINE_TARGETS": env["targets"],
                       "PIPELINE_PAGERDUTY_ROUTING_KEY": "k", "PIPELINE_PAGERDUTY_URL": rx.url + "/pagerduty",
                       "PYTHONPATH": str(ROOT)}
        for key in ("PREFECT_API_URL", "PIPELINE_MONITORING", "PIPELINE_CONFIG"):
            watcher_env.pop(key, None)
        log = (tmp_path / "watch.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "flows", "watch"], cwd=ROOT, env=watcher_env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            # 1. Nothing deployed: the watcher, the health flow and status say so; nothing fires, nobody is paged.
            beat = wait_until(lambda: _heartbeat(home), 90, "the first heartbeat")
            assert beat["interval_s"] == cfg.health_interval_s == 30
            assert beat["targets"]["t1"]["status"] == "not deployed" and beat["targets"]["t1"]["alarm"] is None
            flow = health_flow(targets_file=env["targets"])
            assert flow["targets"]["t1"]["status"] == "not deployed" and flow["transitions"] == []
            target = load_targets(env["targets"], home)["t1"]
            # capsys would hand Prefect's log handler (set up by the flow above) a stream closed after the test
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                assert not _target_status(target, None, None)["deployed"]
            assert "target t1: not deployed" in printed.getvalue()
            assert json.loads((home / "monitoring" / "alarms.json").read_text()) == {} and rx.received == []

            # 2. Deployed and healthy, then killed: paged once, within a round and its retries.
            bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
            deploy_to(target, bundle, meta)
            healthy = wait_until(lambda: (b := _heartbeat(home)) and b["targets"]["t1"]["status"] == "healthy" and b,
                                 2 * cfg.health_interval_s + 30, "a healthy round")
            _kill_server(env)
            killed = time.monotonic()
            trigger = wait_until(lambda: rx.on("/pagerduty"), 60, "PagerDuty's trigger")
            detected_s = time.monotonic() - killed
            assert [(b["event_action"], b["dedup_key"]) for b in trigger] == [("trigger", "t1|1|liveness")]
            assert "version 1" in trigger[0]["payload"]["group"]
            history = [json.loads(line) for line in (home / "monitoring" / "alarm-history.jsonl").read_text()
                       .splitlines()]
            assert [(h["target"], h["alarm"]["rule"], h["state"], h["sent_to"]) for h in history] == \
                [("t1", "liveness", "firing", ["pagerduty", "slack: not configured"])]
            # The kill came right after a healthy round: the next round is at most an interval away, and a
            # refused connection fails each attempt at once.
            bound = cfg.health_interval_s + (cfg.host_attempts - 1) * cfg.host_retry_wait_s + 5
            figure("kill_to_page_s", round(detected_s, 1), "s",
                   f"SIGKILL of a healthy server (just after round {healthy['rounds']}) to PagerDuty's trigger; "
                   f"every {cfg.health_interval_s:g} s, {cfg.host_attempts} attempts {cfg.host_retry_wait_s:g} s apart")
            assert detected_s < min(60, bound)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            log.close()
    out = (tmp_path / "watch.log").read_text()
    assert code == 0, out
    lines = out.strip().splitlines()
    assert "target t1: not deployed: its host has no release yet" in lines[1]
    assert any("target t1: healthy (serves 1)" in ln for ln in lines)
    assert any("alarm liveness firing on t1 (critical); sent to pagerduty" in ln for ln in lines)
    assert lines[-1].endswith(" round(s)") and "stopped after" in lines[-1]
    assert len(lines) <= 8, out                                    # one line per change, not per round
