"""Fleets in the inventory, and a fleet release's plan and decisions: batches, what a halt puts back, the
canary's verdict (with a stand-in monitor and clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.deploy.fleets import load_fleet
from tasks.deploy.plan import ALL, BATCH, CANARY, FleetOutcome, batches, halt, plan
from tasks.deploy.targets import Target
from tasks.errors import ConfigError
from tasks.monitoring.canary import canary_verdict, watch_canary
from tasks.monitoring.rules import CRITICAL, WARNING, Alarm
from tasks.monitoring.settings import MonitoringSettings

pytestmark = pytest.mark.unit

HOSTS = "".join(f"  web-{i}:\n    base_dir: targets/web-{i}\n    port: {8000 + i}\n" for i in range(1, 5))


def _inventory(tmp_path: Path, fleets: str) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n" + HOSTS + "fleets:\n" + fleets)
    return path


def _fleet(tmp_path, fleets: str, name: str = "web"):
    return load_fleet(_inventory(tmp_path, fleets), tmp_path / "home", name)


def test_a_fleet_is_read_with_its_targets_in_order_and_relative_dirs_under_the_home(tmp_path):
    fleet, targets = _fleet(tmp_path, "  web:\n    targets: [web-3, web-1, web-2]\n    strategy: rolling\n"
                                      "    balancer: {listen_port: 9090}\n")
    assert [t.name for t in targets] == ["web-3", "web-1", "web-2"]
    assert fleet.strategy == "rolling" and fleet.batch_size == 1 and fleet.max_parallel_transfers == 4
    assert fleet.balancer.config_dir == tmp_path / "home" / "nginx" and fleet.balancer.listen_port == 9090


@pytest.mark.parametrize(("spec", "message"), [
    ("    targets: [web-1, web-9, nope]\n", r"fleets\.web\.targets: unknown target\(s\) \['web-9', 'nope'\]"),
    ("    targets: [web-1, web-2]\n    strategy: blue-green\n", r"fleets\.web\.strategy: Input should be"),
    ("    targets: [web-1, web-2]\n    batch_size: 0\n", r"fleets\.web\.batch_size: Input should be greater"),
    ("    targets: [web-1, web-2]\n    canary: {window_s: -1}\n", r"fleets\.web\.canary\.window_s"),
    ("    targets: [web-1, web-2]\n    canary: {halt_on: info}\n", r"fleets\.web\.canary\.halt_on"),
    ("    targets: [web-1, web-2]\n    colour: blue\n", r"fleets\.web\.colour: Extra inputs are not permitted"),
    ("    targets: [web-1, web-1]\n", r"targets listed twice: \['web-1'\]"),
    ("    targets: [web-1, web-2]\n    batch_size: 2\n    balancer: {}\n", r"would take all 2 hosts out"),
    ("    targets: [web-1, web-2]\n    strategy: canary\n    canary: {hosts: 2}\n", r"leaves no host"),
    ("    targets: []\n", r"fleets\.web\.targets: List should have at least 1 item"),
])
def test_a_bad_fleet_is_refused_naming_the_file_and_the_key(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        _fleet(tmp_path, "  web:\n" + spec)
    assert str(tmp_path / "targets.yaml") in str(err.value)


def test_an_unknown_fleet_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown fleet 'db'; known: \['web'\]"):
        _fleet(tmp_path, "  web:\n    targets: [web-1]\n", name="db")


def _plan(tmp_path, spec: str):
    fleet, _ = _fleet(tmp_path, "  web:\n    targets: [web-1, web-2, web-3, web-4]\n" + spec)
    return [(p.kind, list(p.hosts), p.drain, p.pause_after_s) for p in plan(fleet)]


def test_batches_keep_the_order_and_the_last_may_be_smaller():
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batches(["a"], 3) == [["a"]]
    with pytest.raises(ValueError):
        batches(["a"], 0)


def test_rolling_goes_batch_by_batch_drained_behind_a_balancer_pausing_between(tmp_path):
    assert _plan(tmp_path, "    strategy: rolling\n    batch_size: 3\n    pause_s: 5\n    balancer: {}\n") == [
        (BATCH, ["web-1", "web-2", "web-3"], True, 5), (BATCH, ["web-4"], True, 0)]
    assert _plan(tmp_path, "    strategy: rolling\n    batch_size: 2\n") == [
        (BATCH, ["web-1", "web-2"], False, 0), (BATCH, ["web-3", "web-4"], False, 0)]


def test_all_at_once_is_one_phase_swapped_in_place(tmp_path):
    assert _plan(tmp_path, "    strategy: all-at-once\n    balancer: {}\n") == [
        (ALL, ["web-1", "web-2", "web-3", "web-4"], False, 0)]


def test_canary_goes_first_then_the_rest_rolls_or_goes_at_once(tmp_path):
    assert _plan(tmp_path, "    strategy: canary\n    batch_size: 2\n    canary: {hosts: 1}\n    balancer: {}\n") == [
        (CANARY, ["web-1"], True, 0), (BATCH, ["web-2", "web-3"], True, 0), (BATCH, ["web-4"], True, 0)]
    assert _plan(tmp_path, "    strategy: canary\n    canary: {hosts: 2, then: all-at-once}\n") == [
        (CANARY, ["web-1", "web-2"], False, 0), (ALL, ["web-3", "web-4"], False, 0)]


def test_a_halt_puts_back_the_hosts_done_newest_first_and_leaves_the_rest(tmp_path):
    fleet, _ = _fleet(tmp_path, "  web:\n    targets: [web-1, web-2, web-3, web-4]\n    batch_size: 1\n")
    phases = plan(fleet)
    decision = halt(phases, done=["web-1", "web-2"], failed=["web-3"])
    assert decision.restore == ("web-2", "web-1") and decision.untouched == ("web-4",)
    first = halt(phases, done=[], failed=["web-1"])                    # the first host failed: nothing to undo
    assert first.restore == () and first.untouched == ("web-2", "web-3", "web-4")
    canary = halt(phases, done=["web-1"], failed=[])                    # the canary's verdict: only it goes back
    assert canary.restore == ("web-1",) and canary.untouched == ("web-2", "web-3", "web-4")


def test_the_outcome_says_which_hosts_were_done_put_back_and_never_touched():
    out = FleetOutcome("web", "rolling", done=["web-1"], failed={"web-2": "smoke test failed: /health"},
                       restored={"web-1": "target web-1 restored to version 1.0.0"}, untouched=["web-3"])
    assert not out.ok
    assert out.summary() == ("done: web-1; failed: web-2 (smoke test failed: /health); put back: web-1 (target "
                             "web-1 restored to version 1.0.0); never touched: web-3")
    assert FleetOutcome("web", "rolling", done=["web-1", "web-2"]).ok


def _alarm(level: str, rule: str = "psi:age") -> Alarm:
    return Alarm(rule, level, 0.9, 0.25, f"{rule} is off", "Investigate")


def test_the_canary_verdict_counts_only_alarms_on_the_new_version_at_or_above_its_level():
    on_old = {"1.0.0": [_alarm(CRITICAL)]}
    assert not canary_verdict(on_old, "1.1.0", "critical").halt          # not the release's doing
    warning = {"1.1.0": [_alarm(WARNING, "prediction_mean")]}
    clean = canary_verdict(warning, "1.1.0", "critical")
    assert not clean.halt and clean.reasons == ["warning prediction_mean: prediction_mean is off (below critical)"]
    assert canary_verdict(warning, "1.1.0", "warning").halt
    stop = canary_verdict({"1.1.0": [_alarm(CRITICAL), _alarm(WARNING, "ece")]}, "1.1.0", "critical")
    assert stop.halt and stop.reasons == ["critical psi:age: psi:age is off"]


class _Clock:
    def __init__(self) -> None:
        self.now, self.waits = 0.0, []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class _Meta:
    version = "1.1.0"


def _watcher(per_check: list[dict[str, list[Alarm]]], calls: list):
    """A stand-in for watch_target: the alarms of each successive check, and the lookback it was given."""
    def watch(target, registry_version, metadata, cfg, now, previous_export):
        calls.append((target.name, registry_version, cfg.lookback_minutes, previous_export))
        alarms = per_check[min(len(calls) - 1, len(per_check) - 1)]
        return {"target": target.name, "finding": {"finding": "ok"}, "alarms": alarms}
    return watch


def _canary_targets() -> list[Target]:
    return [Target(name="web-1", base_dir=Path("/tmp/w1"), port=8001)]


def test_a_clean_canary_is_watched_for_the_whole_window_every_check_interval():
    clock, calls = _Clock(), []
    verdict = watch_canary(_canary_targets(), "2", _Meta(), MonitoringSettings(), window_s=90, check_every_s=30,
                           halt_on="critical", previous_export="1.0.0", watch=_watcher([{}], calls),
                           clock=clock, wait=clock.wait)
    assert not verdict.halt and verdict.checks == 4 and verdict.seconds == 90 and clock.waits == [30, 30, 30]
    assert calls[0] == ("web-1", "2", 2, "1.0.0")       # the lookback covers the window (whole minutes)


def test_a_critical_alarm_on_the_canary_ends_the_window_early_with_a_halt():
    clock, calls = _Clock(), []
    checks = [{}, {"1.1.0": [_alarm(CRITICAL)]}]
    verdict = watch_canary(_canary_targets(), "2", _Meta(), MonitoringSettings(), window_s=300, check_every_s=10,
                           halt_on="critical", watch=_watcher(checks, calls), clock=clock, wait=clock.wait)
    assert verdict.halt and verdict.checks == 2 and verdict.seconds == 10
    assert verdict.reasons == ["web-1: critical psi:age: psi:age is off"]
