"""A fleet for the tests and bench/: hosts (target dicts) in an inventory of their own, their nginx, a registry.

    versions = register_versions(base, demo_frame, n=2)      # inside a Prefect server (test harness)
    fleet = Fleet(versions, {"web-1": {...}, ...}, tmp)       # hosts: target dicts without their name
    fleet.write("rolling"); fleet.deploy("setup", "1")
    with fleet.nginx(), Load(port=fleet.port, body=bodies(versions), pooled=True) as load: ...

The same Fleet runs on local targets (127.0.0.1, a port and base directory each) and on SSH hosts in
network namespaces (``testkit.netns``); the callers choose. ``PIPELINE_HOME`` must name
``versions["home"]`` while the flows run (the caller sets it).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from testkit.demo import make_demo
from testkit.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def register_versions(base: Path, frame, config_text: str, n: int = 2) -> dict:
    """A pipeline home under ``base`` whose registry holds versions 1..n of ``frame``'s model (released and
    gated by ``release_flow``, deployed nowhere). Runs the flows, so a Prefect server must be current.

    Returns: home, config, base, exports (registry version -> export version), client (MlflowClient)."""
    import os

    from mlflow import MlflowClient

    from flows.release import release_flow

    home, data, config = base / "home", base / "demo.csv", base / "pipeline.yaml"
    home.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, index=False)
    config.write_text(config_text)
    saved = os.environ.get("PIPELINE_HOME")
    os.environ["PIPELINE_HOME"] = str(home)
    try:
        for _ in range(n):
            release_flow(data=str(data), schema=str(ROOT / "configs" / "schema.yaml"),
                         feature_list=str(ROOT / "configs" / "feature_list.csv"), config=str(config), targets=[])
    finally:
        if saved is None:
            os.environ.pop("PIPELINE_HOME", None)
        else:
            os.environ["PIPELINE_HOME"] = saved
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model = next(iter(client.search_registered_models())).name
    exports = {str(v): client.get_model_version(model, str(v)).tags["export_version"] for v in range(1, n + 1)}
    return {"home": home, "config": config, "base": base, "exports": exports, "client": client, "model": model}


class Fleet:
    """``hosts`` (name -> target dict) in an inventory of their own, their nginx, and the registry's versions."""

    def __init__(self, env: dict, hosts: dict[str, dict], tmp: Path, port: int | None = None) -> None:
        self.env, self.tmp = env, tmp
        self.port = port or free_port()
        self.inventory = tmp / "targets.yaml"
        self.hosts = hosts
        self.names = list(hosts)

    def write(self, strategy: str, config_dir: str | None = None, **extra) -> None:
        """``setup`` (all-at-once, no balancer) and ``web`` (``strategy`` behind nginx) on the same hosts."""
        extra = {"batch_size": 1, **extra}
        fleets = {"setup": {"targets": self.names, "strategy": "all-at-once", "max_parallel_transfers": 16},
                  "web": {"targets": self.names, "strategy": strategy,
                          "balancer": {"listen_port": self.port, "config_dir": config_dir or str(self.tmp / "nginx"),
                                       "reload_timeout_s": 30}, **extra}}
        hosts = {n: {k: str(v) if isinstance(v, Path) else v for k, v in h.items()} for n, h in self.hosts.items()}
        self.inventory.write_text(json.dumps({"targets": hosts, "fleets": fleets}, indent=1))

    def deploy(self, fleet: str, version: str) -> dict:
        from flows.deploy import deploy_flow

        return deploy_flow(version=version, fleet=fleet, targets_file=str(self.inventory),
                           config=str(self.env["config"]), reason=f"test: {fleet}")

    def targets(self, fleet: str = "web"):
        from tasks.deploy.fleets import load_fleet

        return load_fleet(self.inventory, self.env["home"], fleet)

    def status(self) -> dict[str, dict]:
        from tasks.deploy.transports import transport_for

        return {t.name: transport_for(t).host("status") for t in self.targets()[1]}

    def served(self) -> dict[str, str | None]:
        return {name: state.get("default_version") for name, state in self.status().items()}

    def champion(self) -> str:
        return str(self.env["client"].get_model_version_by_alias(self.env["model"], "champion").version)

    @contextmanager
    def nginx(self):
        from tasks.deploy.balancer import NginxBalancer
        from testkit.nginx import running_nginx

        fleet, targets = self.targets()
        with running_nginx(NginxBalancer(fleet, targets, str(self.inventory))):
            yield

    def stop(self) -> None:
        """Stop every host's server (best effort: a host cut off and not mended is skipped)."""
        from tasks.deploy.transports import transport_for
        from tasks.errors import ReleaseError

        for target in self.targets()[1]:
            try:
                transport_for(target).host("stop")
            except ReleaseError:
                pass


def bodies(env: dict, rows: int = 1) -> list[bytes]:
    """/predict bodies of ``rows`` golden examples each (version 1's)."""
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    registry = MlflowRegistry(load_settings(env["config"], env={"PIPELINE_HOME": str(env["home"])}))
    golden = registry.metadata_of(registry.get_version("1")).golden_examples
    return [json.dumps({"features": [g.features for g in golden[i:i + rows]]}).encode()
            for i in range(0, len(golden), rows)]


def drifted(rows: int = 20) -> list[bytes]:
    """/predict bodies far from the training data (older ages, one region): the monitor's PSI alarms go off."""
    frame = make_demo(n_rows=200, seed=5)
    frame["age"] = np.random.default_rng(1).integers(66, 80, len(frame))
    frame["region"] = "north"
    features = frame.drop(columns=["default"]).replace({np.nan: None}).to_dict("records")
    return [json.dumps({"features": features[i:i + rows]}).encode() for i in range(0, len(features), rows)]
