"""The health check's judgement: a target that never had a version pages nobody, one that had pages when down;
the record of deployed targets; the watcher's heartbeat and when it counts as silent."""

from __future__ import annotations

import json

import pytest

from tasks.deploy.targets import Target
from tasks.monitoring import liveness
from tasks.monitoring.liveness import (
    NOT_DEPLOYED,
    RULE,
    SILENT_RULE,
    DeployedRecord,
    check_liveness,
    in_scope,
    read_heartbeat,
    watcher_silence,
    write_heartbeat,
)
from tasks.monitoring.settings import MonitoringSettings
from testkit.net import free_port

pytestmark = pytest.mark.unit

CFG = MonitoringSettings(host_attempts=2, host_retry_wait_s=0.0)


def _target(tmp_path, port: int | None = None) -> Target:
    return Target(name="t1", base_dir=tmp_path / "t1", port=port or free_port())


def _down(monkeypatch, releases: list[str] | None, asked: list[str]) -> None:
    """/health never answers; the host says it has ``releases`` (None: the host cannot be asked)."""
    monkeypatch.setattr(liveness, "_ask_health", lambda target, timeout_s: ({}, "/health unreachable: refused"))

    def host(target):
        asked.append(target.name)
        return releases, "host unreachable: ssh refused" if releases is None else f"releases {releases}"
    monkeypatch.setattr(liveness, "host_releases", host)


def test_a_target_that_never_had_a_version_is_not_deployed_and_pages_nobody(tmp_path, monkeypatch):
    asked: list[str] = []
    _down(monkeypatch, [], asked)
    record = DeployedRecord(tmp_path)
    found = check_liveness(_target(tmp_path), CFG, record)
    assert (found.status, found.alarm) == (NOT_DEPLOYED, None) and asked == ["t1"]
    assert not record.knows("t1")


@pytest.mark.parametrize(("releases", "said"), [(["1", "2"], "releases ['1', '2']"),
                                                (None, "host unreachable")])
def test_a_down_target_with_a_release_or_an_unknown_host_pages(tmp_path, monkeypatch, releases, said):
    asked: list[str] = []
    _down(monkeypatch, releases, asked)
    record = DeployedRecord(tmp_path)
    found = check_liveness(_target(tmp_path), CFG, record)
    assert found.alarm is not None and found.alarm.rule == RULE and found.alarm.level == "critical"
    assert "/health unreachable" in found.alarm.message and said in found.alarm.message
    assert "2 attempt(s)" in found.alarm.message
    assert found.served == (releases[-1] if releases else None)
    assert record.knows("t1") == bool(releases)


def test_once_a_version_was_seen_a_down_server_pages_without_asking_the_host(tmp_path, monkeypatch):
    asked: list[str] = []
    record = DeployedRecord(tmp_path)
    record.note("t1", "3", "health", now=1.0)
    record.save()
    _down(monkeypatch, [], asked)        # the host would say "no release": it is not asked
    found = check_liveness(_target(tmp_path), CFG, DeployedRecord(tmp_path))
    assert found.alarm is not None and found.served == "3" and asked == []


def test_a_healthy_answer_is_remembered_with_its_version(tmp_path, monkeypatch):
    monkeypatch.setattr(liveness, "_ask_health", lambda target, timeout_s: (
        {"status": "healthy", "default_version": "4"}, None))
    record = DeployedRecord(tmp_path)
    found = check_liveness(_target(tmp_path), CFG, record, now=5.0)
    assert (found.status, found.served, found.alarm) == ("healthy", "4", None)
    record.save()
    assert json.loads((tmp_path / "deployed.json").read_text()) == {
        "t1": {"version": "4", "source": "health", "since": 5.0}}


def test_the_record_merges_what_two_checks_learnt(tmp_path):
    first, second = DeployedRecord(tmp_path), DeployedRecord(tmp_path)
    first.note("a", "1", "health", now=1.0)
    second.note("b", None, "host", now=2.0)
    first.save()
    second.save()
    merged = DeployedRecord(tmp_path)
    assert merged.knows("a") and merged.knows("b") and merged.version_of("a") == "1"
    assert merged.version_of("b") is None
    merged.note("a", None, "host", now=3.0)          # nothing new: the file keeps the version seen
    merged.note("a", "1", "health", now=3.0)
    assert merged._changed == {}


def test_the_monitor_leaves_the_health_rules_alone():
    assert in_scope(RULE) and in_scope(SILENT_RULE) and not in_scope("psi:age")


@pytest.mark.parametrize(("beat", "deployed", "silent"), [
    (None, False, None),                                   # nothing deployed yet: no watcher is needed
    (None, True, "never wrote a heartbeat"),
    ({"at": 1000.0 - 89, "interval_s": 30}, True, None),   # within three of its rounds
    ({"at": 1000.0 - 91, "interval_s": 30}, True, "silent for 91 s"),
    ({"at": 1000.0 - 91, "interval_s": 60}, True, None),   # its own interval, not the config's
    ({"at": 1000.0 - 91}, True, "silent for 91 s"),        # none recorded: the config's
])
def test_the_watcher_is_silent_after_three_of_its_rounds(beat, deployed, silent):
    alarm = watcher_silence(beat, now=1000.0, interval_s=30, deployed=deployed)
    if silent is None:
        assert alarm is None
    else:
        assert alarm is not None and alarm.rule == SILENT_RULE and silent in alarm.message
        assert "restart" in alarm.action


def test_the_heartbeat_round_trips_and_garbage_reads_as_none(tmp_path):
    assert read_heartbeat(tmp_path) is None
    path = write_heartbeat(tmp_path, 12.5, 30, 7, {"t1": {"status": "healthy"}}, pid=99)
    assert read_heartbeat(tmp_path) == {"at": 12.5, "interval_s": 30, "rounds": 7, "pid": 99,
                                        "targets": {"t1": {"status": "healthy"}}}
    path.write_text("{not json")
    assert read_heartbeat(tmp_path) is None
    path.write_text('{"at": "yesterday"}')
    assert read_heartbeat(tmp_path) is None


@pytest.mark.integration
def test_the_host_agent_says_whether_a_local_target_had_a_release(tmp_path):
    target = _target(tmp_path)
    record = DeployedRecord(tmp_path / "monitoring")
    found = check_liveness(target, CFG, record)
    assert (found.status, found.alarm, found.detail) == (NOT_DEPLOYED, None, "its host has no release yet")
    (target.base_dir / "releases" / "2").mkdir(parents=True)      # what a deploy's unpack leaves
    found = check_liveness(target, CFG, record)
    assert found.alarm is not None and "its host has release(s) 2" in found.alarm.message
    assert found.served == "2" and record.knows("t1")


@pytest.mark.parametrize(("state", "alarm", "finding"), [
    ({"running": False, "releases": []}, None, "not deployed (no release on the host yet)"),
    ({"running": False, "releases": ["1"]}, "pipeline.alarm.page", "no server running"),
])
def test_the_hourly_probe_pages_only_a_target_that_had_a_version(tmp_path, monkeypatch, state, alarm, finding):
    from tasks.monitoring import probe

    class Host:
        def host(self, *args):
            return {"ok": True, "pid": None, **state}

    monkeypatch.setattr(probe, "transport_for", lambda target: Host())
    found = probe.check_target(_target(tmp_path), None, None)
    assert (found.alarm, found.finding, found.served) == (alarm, finding, None)
