"""The health check's round and the watcher's loop without servers: what a round fires and resolves, the
watcher's alarm, the lines the watcher prints, its bounds, and how few runs the ``health`` deployment makes."""

from __future__ import annotations

import json
import threading

import pytest
import yaml

from tasks.deploy.targets import Target
from tasks.monitoring.liveness import NOT_DEPLOYED, RULE, SILENT_RULE, Liveness, write_heartbeat
from tasks.monitoring.rules import CRITICAL, Alarm
from tasks.monitoring.settings import MonitoringSettings
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DAY_S = 24 * 3600
DOWN = Alarm(RULE, CRITICAL, None, 0.0, "/health unreachable: refused (3 attempt(s))", "bring it back")


def test_the_health_deployment_makes_at_most_six_runs_a_day(figure):
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (health,) = [d for d in spec["deployments"] if d["name"] == "health"]
    (schedule,) = health["schedules"]
    runs_per_day = DAY_S / schedule["interval"]
    figure("health_runs_per_day", runs_per_day, "flow runs/day", "prefect.yaml's health schedule (was 2,880)")
    assert runs_per_day <= 6 and schedule["active"]


def _round(tmp_path, monkeypatch, found: dict[str, Liveness], heartbeat: str = "ignore") -> dict:
    from flows import health

    monkeypatch.setattr(health, "check_liveness", lambda target, cfg, record: found[target.name])
    targets = [Target(name=n, base_dir=tmp_path / n) for n in found]
    return health.health_round(targets, tmp_path, "m", MonitoringSettings(), {}, events=False,
                               heartbeat=heartbeat)


def _states(result: dict) -> list[tuple[str, str, str]]:
    return [(t["target"], t["rule"], t["state"]) for t in result["transitions"]]


def test_a_round_pages_a_down_target_once_and_never_one_not_deployed(tmp_path, monkeypatch):
    found = {"new": Liveness("new", NOT_DEPLOYED, None, None, "its host has no release yet"),
             "old": Liveness("old", "unreachable", "3", DOWN, DOWN.message)}
    first = _round(tmp_path, monkeypatch, found)
    assert _states(first) == [("old", RULE, "firing")] and first["transitions"][0]["version"] == "3"
    assert first["targets"]["new"]["status"] == NOT_DEPLOYED and first["targets"]["new"]["alarm"] is None
    assert _round(tmp_path, monkeypatch, found)["transitions"] == []          # still down: not sent again
    found["old"] = Liveness("old", "healthy", "3", None, "answers healthy")
    assert _states(_round(tmp_path, monkeypatch, found)) == [("old", RULE, "resolved")]
    history = [json.loads(line) for line in (tmp_path / "monitoring" / "alarm-history.jsonl").read_text().splitlines()]
    assert [(h["target"], h["state"]) for h in history] == [("old", "firing"), ("old", "resolved")]


def test_the_deployment_pages_a_silent_watcher_and_the_watcher_resolves_it(tmp_path, monkeypatch):
    quiet = {"new": Liveness("new", NOT_DEPLOYED, None, None, "its host has no release yet")}
    assert _round(tmp_path, monkeypatch, quiet, heartbeat="judge")["transitions"] == []   # nothing to watch yet
    up = {"old": Liveness("old", "healthy", "3", None, "answers healthy")}
    write_heartbeat(tmp_path / "monitoring", 0.0, 30, 1, {}, pid=1)              # 1970: long silent
    fired = _round(tmp_path, monkeypatch, up, heartbeat="judge")
    assert _states(fired) == [("health-watcher", SILENT_RULE, "firing")]
    assert "health watcher silent for" in fired["transitions"][0]["message"]
    assert _states(_round(tmp_path, monkeypatch, up, heartbeat="alive")) == [("health-watcher", SILENT_RULE,
                                                                              "resolved")]


def test_the_watcher_prints_one_line_per_change():
    from flows.watcher import changes

    before: dict[str, str] = {}
    result = {"at": 0.0, "targets": {"t1": {"status": "healthy", "served": "3", "detail": "answers healthy"}},
              "transitions": []}
    assert changes(before, result) == ["1970-01-01T00:00:00Z target t1: healthy (serves 3)"]
    assert changes(before, result) == []                                       # nothing changed: nothing said
    result["targets"]["t1"] = {"status": "unreachable", "served": "3", "detail": DOWN.message}
    result["transitions"] = [{**DOWN.to_dict(), "target": "t1", "version": "3", "state": "firing",
                              "sent_to": ["pagerduty", "slack: not configured"]}]
    assert changes(before, result) == [
        f"1970-01-01T00:00:00Z target t1: unreachable: {DOWN.message}",
        "1970-01-01T00:00:00Z alarm liveness firing on t1 (critical); sent to pagerduty, slack: not configured"]


def test_the_watcher_stops_after_its_rounds_its_time_or_a_signal(tmp_path, monkeypatch):
    from flows import watcher

    calls: list[float] = []

    def fake_round(chosen, home, model, cfg, env, *, events, heartbeat):
        assert heartbeat == "alive" and events is False
        calls.append(1)
        return {"at": 0.0, "targets": {}, "transitions": []}

    monkeypatch.setattr(watcher, "health_round", fake_round)
    fast = MonitoringSettings(health_interval_s=1)
    lines: list[str] = []
    out = watcher.watch([], tmp_path, "m", fast, {}, rounds=2, say=lines.append)
    assert out["rounds"] == 2 and len(calls) == 2 and lines[-1].endswith("stopped after 2 round(s)")
    assert (tmp_path / "monitoring" / "health-watcher.json").exists()
    assert watcher.watch([], tmp_path, "m", fast, {}, for_s=0.5, say=lines.append)["rounds"] == 1
    stop = threading.Event()
    stop.set()                                                       # SIGTERM before the first wait
    assert watcher.watch([], tmp_path, "m", MonitoringSettings(), {}, stop=stop, say=lines.append)["rounds"] == 1
    assert "Prefect events off (PREFECT_API_URL unset)" in lines[0]
