"""Fleet releases for real: three hosts (local targets on their own ports and base directories) behind a
real nginx, two registered versions in a real MLflow registry, each host a real server process.

The hosts come from the ``fleet_hosts`` fixture as target dicts (everything but the name), so the same
tests run on other hosts (SSH hosts in network namespaces) by overriding that fixture.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import FleetHalted
from testkit.demo import make_demo
from testkit.load import Load, percentile
from testkit.net import free_port
from tests.conftest import FAST_CONFIG, mlflow_client

pytestmark = pytest.mark.integration
NAMES = ("web-1", "web-2", "web-3")


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory, demo_frame, schema_path_module, feature_list_module, prefect_server):
    """A pipeline home whose registry holds versions 1 and 2 (released, gated, not deployed)."""
    from flows.release import release_flow

    base = tmp_path_factory.mktemp("fleet")
    home, data, config = base / "home", base / "demo.csv", base / "pipeline.yaml"
    home.mkdir()
    demo_frame.to_csv(data, index=False)
    config.write_text(FAST_CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_HOME", str(home))
        for _ in range(2):
            release_flow(data=str(data), schema=str(schema_path_module), feature_list=str(feature_list_module),
                         config=str(config), targets=[])
        client = mlflow_client(home)[0]
        exports = {v: client.get_model_version("test-model", v).tags["export_version"] for v in ("1", "2")}
        yield {"home": home, "config": config, "base": base, "exports": exports, "client": client}


@pytest.fixture(scope="module")
def schema_path_module():
    from tests.conftest import ROOT

    return ROOT / "configs" / "schema.yaml"


@pytest.fixture(scope="module")
def feature_list_module():
    from tests.conftest import ROOT

    return ROOT / "configs" / "feature_list.csv"


@pytest.fixture
def fleet_hosts(tmp_path) -> list[dict]:
    """Three hosts as target dicts: local targets on 127.0.0.1, each on its own port and base directory."""
    return [{"transport": "local", "base_dir": str(tmp_path / name), "host": "127.0.0.1", "port": free_port(),
             "start_timeout_s": 180} for name in NAMES]


class Fleet:
    """A fleet of ``fleet_hosts`` in an inventory of its own, its nginx, and the registry's two versions."""

    def __init__(self, env: dict, hosts: list[dict], tmp: Path, monkeypatch) -> None:
        self.env, self.tmp = env, tmp
        self.port = free_port()
        self.inventory = tmp / "targets.yaml"
        self.hosts = dict(zip(NAMES, hosts, strict=True))
        monkeypatch.setenv("PIPELINE_HOME", str(env["home"]))

    def write(self, strategy: str, config_dir: str | None = None, **extra) -> None:
        """``setup`` (all-at-once, no balancer) and ``web`` (``strategy`` behind nginx) on the same hosts."""
        fleets = {"setup": {"targets": list(NAMES), "strategy": "all-at-once"},
                  "web": {"targets": list(NAMES), "strategy": strategy, "batch_size": 1,
                          "balancer": {"listen_port": self.port, "config_dir": config_dir or str(self.tmp / "nginx"),
                                       "reload_timeout_s": 30}, **extra}}
        self.inventory.write_text(json.dumps({"targets": self.hosts, "fleets": fleets}, indent=1))

    def deploy(self, fleet: str, version: str) -> dict:
        from flows.deploy import deploy_flow

        return deploy_flow(version=version, fleet=fleet, targets_file=str(self.inventory),
                           config=str(self.env["config"]), reason=f"test: {fleet}")

    def targets(self):
        from tasks.deploy.fleets import load_fleet

        return load_fleet(self.inventory, self.env["home"], "web")

    def served(self) -> dict[str, str | None]:
        from tasks.deploy.transports import transport_for

        return {t.name: transport_for(t).host("status").get("default_version") for t in self.targets()[1]}

    def champion(self) -> str:
        return str(self.env["client"].get_model_version_by_alias("test-model", "champion").version)

    @contextmanager
    def nginx(self):
        from tasks.deploy.balancer import NginxBalancer
        from testkit.nginx import running_nginx

        fleet, targets = self.targets()
        with running_nginx(NginxBalancer(fleet, targets, str(self.inventory))):
            yield

    def stop(self) -> None:
        from tasks.deploy.transports import transport_for

        for target in self.targets()[1]:
            transport_for(target).host("stop")


@pytest.fixture
def fleet(registry_home, fleet_hosts, tmp_path, monkeypatch):
    """The three hosts on version 1 (champion 1); their servers are stopped after the test."""
    f = Fleet(registry_home, fleet_hosts, tmp_path, monkeypatch)
    f.write("rolling")
    try:
        f.deploy("setup", "1")
        yield f
    finally:
        f.stop()


def _bodies(env: dict, rows: int = 1) -> list[bytes]:
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    registry = MlflowRegistry(load_settings(env["config"], env={"PIPELINE_HOME": str(env["home"])}))
    golden = registry.metadata_of(registry.get_version("1")).golden_examples
    return [json.dumps({"features": [g.features for g in golden[i:i + rows]]}).encode()
            for i in range(0, len(golden), rows)]


def test_a_rolling_release_under_load_through_nginx_fails_no_request(fleet, figure):
    exports = fleet.env["exports"]
    assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"
    with fleet.nginx(), Load(port=fleet.port, body=_bodies(fleet.env), clients=8, max_seconds=600,
                             pooled=True) as load:
        deadline = time.monotonic() + 60
        while load.count() < 50 and time.monotonic() < deadline:   # traffic flows before the release starts
            time.sleep(0.05)
        started = time.perf_counter()
        result = fleet.deploy("web", "2")
        seconds = time.perf_counter() - started
        outcomes = load.stop()
    failed = [o for o in outcomes if o.status != 200]
    during = [o for o in outcomes if o.status == 200]
    versions = {o.version for o in during}
    figure("rolling_release_3_hosts_s", round(seconds, 1), "s", "3 local hosts behind nginx, 8 clients")
    figure("requests_during_release", len(outcomes), "requests")
    figure("failed_requests_during_release", len(failed), "requests")
    figure("stale_keepalive_resends_during_release", load.stale, "requests",
           "sent again on a new connection: nginx closed the idle kept-alive one at a reload")
    assert len(outcomes) > 100 and failed == [], failed[:5]
    assert versions == {exports["1"], exports["2"]}                   # both served while it rolled
    assert fleet.served() == dict.fromkeys(NAMES, exports["2"]) and fleet.champion() == "2"
    assert result["fleet"]["done"] == list(NAMES) and result["champion_after"] == "2"


def test_status_shows_the_fleet_and_rollback_takes_every_host_back(fleet, capsys):
    from flows.cli import main

    exports = fleet.env["exports"]
    args = ["--targets", str(fleet.inventory), "--config", str(fleet.env["config"])]
    with fleet.nginx():
        assert main(["deploy", "--fleet", "web", "--version", "2", *args]) == 0
        capsys.readouterr()
        assert main(["status", "--fleet", "web", *args]) == 0
        shown = capsys.readouterr().out
        assert f"fleet web: rolling, 3 hosts; nginx at http://127.0.0.1:{fleet.port}: generation" in shown
        for name in NAMES:
            assert f"target {name}: running, serves {exports['2']}, health healthy, in rotation\n" in shown
        assert main(["rollback", "--fleet", "web", *args]) == 0
        assert "champion: 2 -> 1" in capsys.readouterr().out
        assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"
        fleet.write("rolling")              # one host on another version: status says which, and exits 4
        from tasks.deploy.transports import transport_for

        transport_for(fleet.targets()[1][2]).host("activate", "--version", exports["2"])
        assert main(["status", "--fleet", "web", *args]) == 4
        assert f"target web-3: running, serves {exports['2']}, health healthy, in rotation  <-- DIFFERS from the " \
               f"champion's {exports['1']}" in capsys.readouterr().out


def test_throughput_through_nginx_against_one_host(fleet, figure):
    """Requests per second and p99 at 8 clients, through nginx to three hosts and straight to one."""
    bodies = _bodies(fleet.env)
    measured = {}
    with fleet.nginx():
        for how, port in (("nginx_3_hosts", fleet.port), ("direct_1_host", fleet.hosts["web-1"]["port"])):
            with Load(port=port, body=bodies, clients=8, max_seconds=15, pooled=True) as load:
                outcomes = load.wait()
            ok = [o for o in outcomes if o.status == 200]
            span = max(o.started + o.seconds for o in outcomes) - min(o.started for o in outcomes)
            measured[how] = (len(ok) / span, percentile([o.seconds * 1e3 for o in ok], 99))
            figure(f"{how}_rps", round(measured[how][0], 1), "req/s", "8 clients, one golden row per request")
            figure(f"{how}_p99_ms", round(measured[how][1], 2), "ms")
            assert len(ok) == len(outcomes) > 0


def _break_release(fleet: Fleet, name: str, version: str) -> None:
    """Unpack ``version`` on host ``name`` ahead of the release and corrupt a file of it, as a failing
    disk would: the host's server refuses to load it (its hashes do not match the registry's)."""
    from tasks.deploy.package import package_version
    from tasks.deploy.transports import transport_for
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    registry = MlflowRegistry(load_settings(fleet.env["config"], env={"PIPELINE_HOME": str(fleet.env["home"])}))
    model_dir = registry.export_dir(registry.get_version(version), fleet.env["home"] / "registry-cache")
    bundle, metadata = package_version(model_dir, fleet.tmp / "bundles")
    target = {t.name: t for t in fleet.targets()[1]}[name]
    transport = transport_for(target)
    receipt = transport.put(bundle)
    transport.host("unpack", "--bundle", receipt.remote_path, "--version", metadata.version)
    release = Path(target.base_dir) / "releases" / metadata.version / "model" / metadata.model_name / metadata.version
    victim = release / "metadata.json"
    victim.write_text(victim.read_text().replace('"', "'", 1))


def test_a_rolling_release_halts_on_a_failing_host_and_puts_the_done_ones_back(fleet):
    exports = fleet.env["exports"]
    _break_release(fleet, "web-2", "2")
    with fleet.nginx(), pytest.raises(FleetHalted) as halted:
        fleet.deploy("web", "2")
    outcome = halted.value.outcome
    assert outcome.done == ["web-1"] and list(outcome.failed) == ["web-2"]
    assert outcome.restored == {"web-1": f"target web-1 restored to version {exports['1']}"}
    assert outcome.untouched == ["web-3"]
    assert "HALTED" in str(halted.value) and "never touched: web-3" in str(halted.value)
    assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"
    from tasks.deploy.balancer import NginxBalancer

    f, targets = fleet.targets()
    assert NginxBalancer(f, targets).state().drained == frozenset()   # every host back in rotation


def _drifted(rows: int = 20) -> list[bytes]:
    frame = make_demo(n_rows=200, seed=5)
    frame["age"] = np.random.default_rng(1).integers(66, 80, len(frame))
    frame["region"] = "north"
    features = frame.drop(columns=["default"]).replace({np.nan: None}).to_dict("records")
    return [json.dumps({"features": features[i:i + rows]}).encode() for i in range(0, len(features), rows)]


def test_a_canary_with_a_critical_alarm_is_rolled_back_without_a_person(fleet):
    exports = fleet.env["exports"]
    monitoring = fleet.tmp / "monitoring.yaml"
    monitoring.write_text("min_rows_for_drift: 40\nhost_attempts: 1\n")
    fleet.write("canary", canary={"hosts": 1, "window_s": 60, "check_every_s": 1, "halt_on": "critical",
                                  "monitoring": str(monitoring)})
    with fleet.nginx(), Load(port=fleet.port, body=_drifted(), clients=2, interval=0.05, max_seconds=300) as load:
        with pytest.raises(FleetHalted) as halted:
            fleet.deploy("web", "2")
        load.stop()
    outcome = halted.value.outcome
    assert outcome.canary["halt"] and outcome.canary["seconds"] < 60
    assert any("critical psi:age" in r for r in outcome.canary["reasons"]), outcome.canary
    assert outcome.done == ["web-1"] and outcome.failed == {}
    assert outcome.restored == {"web-1": f"target web-1 restored to version {exports['1']}"}
    assert outcome.untouched == ["web-2", "web-3"]
    assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"


def test_the_guides_fleet_commands_run_as_written(fleet):
    """Every fleet command of README.md and deployments/HANDOVER.md, in a shell, as written, in the order the
    documents give them; only the inventory (``PIPELINE_TARGETS``: the three hosts, nginx on a free port) and
    the pipeline home differ."""
    import os
    import subprocess

    from tests.conftest import ROOT
    from tests.flows.test_guide_commands import documented_commands

    exports = fleet.env["exports"]
    fleet.write("rolling", config_dir="nginx")         # relative: $PIPELINE_HOME/nginx, as the guide's nginx -p
    commands = {doc: [c for d, c in documented_commands() if d == doc and ("--fleet" in c or c.startswith("nginx -p"))]
                for doc in ("HANDOVER.md", "README.md")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "MLFLOW_"))},
           "PIPELINE_HOME": str(fleet.env["home"]), "PIPELINE_TARGETS": str(fleet.inventory),
           "PIPELINE_CONFIG": str(fleet.env["config"]), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    stop = next(c for c in commands["HANDOVER.md"] if c.endswith("-s quit"))

    def run(command: str) -> str:
        out = subprocess.run(command, shell=True, executable="/bin/bash", cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, (command, out.returncode, out.stdout[-2000:], out.stderr[-2000:])
        return out.stdout

    ran = []
    try:
        for doc in ("HANDOVER.md", "README.md"):
            for command in commands[doc]:
                if command == stop:
                    continue
                if command.startswith("nginx -p ") and ran.count(command):
                    continue
                if command.startswith("python -m flows deploy"):   # a new version awaits, as after a release
                    fleet.env["client"].set_registered_model_alias("test-model", "challenger", "2")
                shown = run(command)
                ran.append(command)
                if command.startswith("python -m flows status"):
                    assert "DIFFERS" not in shown and "fleet web: rolling, 3 hosts; nginx at " in shown, shown
                if command.startswith("python -m flows rollback"):
                    assert fleet.served() == dict.fromkeys(NAMES, exports["1"]) and fleet.champion() == "1"
                if command.startswith("python -m flows deploy"):
                    assert fleet.served() == dict.fromkeys(NAMES, exports["2"]) and fleet.champion() == "2"
    finally:
        subprocess.run(stop, shell=True, executable="/bin/bash", cwd=ROOT, env=env, timeout=60)
    assert len(ran) >= 9 and any(c.startswith("nginx -p") for c in ran)
