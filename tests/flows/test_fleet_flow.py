"""Fleet releases on local hosts: three local targets (their own ports and base directories) behind a real
nginx, two registered versions in a real MLflow registry (``registry_home``), each host a real server process.

The fleet itself (``fleet``, tests/conftest.py) takes its hosts from ``fleet_hosts``; tests/fleet/
test_fleet_netns.py gives it SSH hosts in network namespaces and runs there what separate hosts show (a
rolling release under load, a host cut off mid-rollout, the canary's rollback, a killed worker, throughput
through nginx). What stays here needs no separate hosts: the CLI's fleet status and rollback, a halt on a
host whose smoke test fails, and the guide's fleet commands as written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import FleetHalted
from testkit.net import free_port

pytestmark = pytest.mark.integration
NAMES = ("web-1", "web-2", "web-3")


@pytest.fixture
def fleet_hosts(tmp_path) -> dict[str, dict]:
    """Three hosts as target dicts: local targets on 127.0.0.1, each on its own port and base directory."""
    return {name: {"transport": "local", "base_dir": str(tmp_path / name), "host": "127.0.0.1", "port": free_port(),
                   "start_timeout_s": 180} for name in NAMES}


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


def _break_release(fleet, name: str, version: str) -> None:
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


def test_the_guides_fleet_commands_run_as_written(fleet):
    """Every fleet command of the documents (deployments/HANDOVER.md first, then README.md and the site's pages),
    in a shell, as written, in the order the documents give them; only the inventory (``PIPELINE_TARGETS``: the
    three hosts, nginx on a free port) and the pipeline home differ."""
    import os
    import subprocess

    from tests.conftest import ROOT
    from tests.flows.test_guide_commands import DOCS, documented_commands

    exports = fleet.env["exports"]
    fleet.write("rolling", config_dir="nginx")         # relative: $PIPELINE_HOME/nginx, as the guide's nginx -p
    docs = sorted(DOCS, key=lambda doc: doc != "deployments/HANDOVER.md")
    commands = {doc: [c for d, c in documented_commands() if d == doc and ("--fleet" in c or c.startswith("nginx -p"))]
                for doc in docs}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "MLFLOW_"))},
           "PIPELINE_HOME": str(fleet.env["home"]), "PIPELINE_TARGETS": str(fleet.inventory),
           "PIPELINE_CONFIG": str(fleet.env["config"]), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    stop = next(c for doc in docs for c in commands[doc] if c.endswith("-s quit"))

    def run(command: str) -> str:
        out = subprocess.run(command, shell=True, executable="/bin/bash", cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, (command, out.returncode, out.stdout[-2000:], out.stderr[-2000:])
        return out.stdout

    ran = []
    try:
        for doc in docs:
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
