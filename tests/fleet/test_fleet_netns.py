"""Fleet releases to three real hosts behind a real nginx: network namespaces with their own address, sshd
and model server (two worker processes each), reached over SSH; nginx runs in this namespace on 127.0.0.1
and its upstreams are the hosts' addresses on the bridge.

The fleet is tests/conftest.py's ``fleet`` (the local variants in tests/flows/test_fleet_flow.py) with
``fleet_hosts`` giving it the namespaced hosts. What only separate hosts show is here: a rolling release
under load, a host cut off from the network mid-rollout, a canary rolled back on its monitor's alarm, and a
killed worker replaced while nginx keeps serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from tasks.errors import FleetHalted
from testkit import netns
from testkit.fleet import bodies, drifted
from testkit.load import Load, percentile

pytestmark = pytest.mark.integration
NAMES = ("host1", "host2", "host3")
WORKERS = 2


@pytest.fixture(scope="module")
def hosts(netns_hosts):
    return netns_hosts(3)


@pytest.fixture
def fleet_hosts(hosts, tmp_path) -> dict[str, dict]:
    """The namespaced hosts as target dicts (SSH to their address, this interpreter, two workers each); each
    test gets fresh base directories, so nothing one test unpacked is seen by the next."""
    out = {}
    for name, host in zip(NAMES, hosts, strict=True):
        spec = host.target(workers=WORKERS, base_dir=tmp_path / name, connect_timeout_s=3)
        out[name] = {k: v for k, v in spec.items() if k != "name"}
    return out


def _workers(fleet, name: str) -> dict:
    """The ``workers`` section of the host's /model_info, asked at its own address."""
    spec = fleet.hosts[name]
    resp = httpx.get(f"http://{spec['host']}:{spec['port']}/model_info", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["workers"]


def _until(what: str, check, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout_s} s")


def test_a_rolling_release_under_load_through_nginx_fails_no_request(fleet, figure):
    exports = fleet.env["exports"]
    assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"
    with fleet.nginx(), Load(port=fleet.port, body=bodies(fleet.env), clients=8, max_seconds=600,
                             pooled=True) as load:
        _until("50 requests answered before the release", lambda: load.count() >= 50, 60)
        started = time.perf_counter()
        result = fleet.deploy("web", "2")
        seconds = time.perf_counter() - started
        outcomes = load.stop()
    failed = [o for o in outcomes if o.status != 200]
    ok = [o for o in outcomes if o.status == 200]
    figure("rolling_release_3_netns_hosts_s", round(seconds, 1), "s", "3 namespaced hosts x 2 workers, 8 clients")
    figure("requests_during_release", len(outcomes), "requests")
    figure("failed_requests_during_release", len(failed), "requests")
    figure("p99_during_release_ms", round(percentile([o.seconds * 1e3 for o in ok], 99), 1), "ms")
    # pooled=True: a request that met nginx closing an idle kept-alive connection at a reload, with no byte
    # answered, is sent again on a new connection, as pooled clients do; counted apart, not as failures.
    figure("stale_keepalive_resends_during_release", load.stale, "requests",
           "sent again on a new connection: nginx closed the idle kept-alive one at a reload")
    assert len(outcomes) > 100 and failed == [], failed[:5]
    assert {o.version for o in ok} == {exports["1"], exports["2"]}        # both served while it rolled
    assert fleet.served() == dict.fromkeys(NAMES, exports["2"]) and fleet.champion() == "2"
    assert result["fleet"]["done"] == list(NAMES) and result["champion_after"] == "2"
    for name in NAMES:
        workers = _workers(fleet, name)
        assert workers["count"] == WORKERS and workers["agree"], (name, workers)
        assert [w["default"] for w in workers["workers"]] == [exports["2"]] * WORKERS, (name, workers)


def test_a_host_cut_off_mid_rollout_halts_it_and_the_done_host_goes_back(fleet, hosts, monkeypatch, capsys):
    """host2's link goes down once host1's batch is done (between batches, inside the flow): the rollout
    halts at host2, host1 returns to version 1, host3 is never touched, the champion stays."""
    from flows.cli import main
    from flows.fleet import FleetRelease

    exports = fleet.env["exports"]
    between_batches = FleetRelease.wait

    def cut_after_host1(self, phase):
        between_batches(self, phase)
        if phase.hosts == ("host1",):
            netns.cut(hosts[1])

    monkeypatch.setattr(FleetRelease, "wait", cut_after_host1)
    try:
        with fleet.nginx():
            with pytest.raises(FleetHalted) as halted:
                fleet.deploy("web", "2")
            outcome = halted.value.outcome
            assert outcome.done == ["host1"] and list(outcome.failed) == ["host2"], outcome
            assert f"target host2 (root@{hosts[1].address}:22)" in outcome.failed["host2"]
            assert "unreachable" in outcome.failed["host2"] or "timed out" in outcome.failed["host2"]
            assert outcome.restored == {"host1": f"target host1 restored to version {exports['1']}"}
            assert outcome.untouched == ["host3"]
            assert "HALTED" in str(halted.value) and "host2" in str(halted.value)
            assert fleet.champion() == "1"
            netns.mend(hosts[1])
            assert fleet.served() == dict.fromkeys(NAMES, exports["1"])
            # Mended: status shows host2 serving the champion's version, still out of rotation (its health could
            # not be read when the phase ended); the operator puts it back.
            args = ["--targets", str(fleet.inventory), "--config", str(fleet.env["config"])]
            capsys.readouterr()
            assert main(["status", "--fleet", "web", *args]) == 0
            shown = capsys.readouterr().out
            assert f"target host2: running, serves {exports['1']}, health healthy, OUT of rotation\n" in shown, shown
            for name in ("host1", "host3"):
                assert f"target {name}: running, serves {exports['1']}, health healthy, in rotation\n" in shown
            assert main(["balancer", "--fleet", "web", "--undrain", "host2", *args]) == 0
            assert main(["status", "--fleet", "web", *args]) == 0
            assert "target host2: running" in (shown := capsys.readouterr().out) and "OUT of rotation" not in shown
    finally:
        netns.mend(hosts[1])


def test_a_canary_with_a_critical_alarm_is_rolled_back_without_a_person(fleet):
    exports = fleet.env["exports"]
    monitoring = fleet.tmp / "monitoring.yaml"
    monitoring.write_text("min_rows_for_drift: 40\nhost_attempts: 1\n")
    fleet.write("canary", canary={"hosts": 1, "window_s": 60, "check_every_s": 1, "halt_on": "critical",
                                  "monitoring": str(monitoring)})
    with fleet.nginx(), Load(port=fleet.port, body=drifted(), clients=2, interval=0.05, max_seconds=300) as load:
        with pytest.raises(FleetHalted) as halted:
            fleet.deploy("web", "2")
        load.stop()
    outcome = halted.value.outcome
    assert outcome.canary["halt"] and outcome.canary["seconds"] < 60
    assert any("critical psi:age" in r for r in outcome.canary["reasons"]), outcome.canary
    assert outcome.done == ["host1"] and outcome.failed == {}
    assert outcome.restored == {"host1": f"target host1 restored to version {exports['1']}"}
    assert outcome.untouched == ["host2", "host3"]
    assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"


def test_a_killed_worker_is_replaced_and_the_host_keeps_serving_through_nginx(fleet, hosts, figure):
    exports = fleet.env["exports"]
    before = _workers(fleet, "host1")
    assert before["count"] == WORKERS
    victim = before["workers"][0]["pid"]
    inside = subprocess.run(["ip", "netns", "pids", hosts[0].name], capture_output=True, text=True, check=True)
    assert str(victim) in inside.stdout.split()          # a worker process inside host1's namespace
    with fleet.nginx(), Load(port=fleet.port, body=bodies(fleet.env), clients=4, max_seconds=300,
                             pooled=True) as load:
        _until("20 requests answered before the kill", lambda: load.count() >= 20, 60)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def replaced():
            w = _workers(fleet, "host1")
            pids = {x["pid"] for x in w["workers"]}
            return w["count"] == WORKERS and w["agree"] and victim not in pids and w

        after = _until("host1's master replaces the killed worker", replaced, 120)
        replaced_s = time.monotonic() - killed_at
        answered = load.count()
        _until("20 more requests after the replacement", lambda: load.count() >= answered + 20, 60)
        outcomes = load.stop()
    failed = [o for o in outcomes if o.status != 200]
    figure("worker_replaced_s", round(replaced_s, 1), "s", "SIGKILL of one of host1's 2 workers, until 2 agree again")
    figure("failed_requests_while_replaced", len(failed), "requests", "through nginx, 4 clients")
    assert failed == [], failed[:5]
    assert [w["default"] for w in after["workers"]] == [exports["1"]] * WORKERS
    spec = fleet.hosts["host1"]
    body = bodies(fleet.env)[0]
    for _ in range(4):      # the host itself, straight: both workers answer (connections spread by the kernel)
        resp = httpx.post(f"http://{spec['host']}:{spec['port']}/predict", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 200 and resp.json()["model_version"] == exports["1"]
