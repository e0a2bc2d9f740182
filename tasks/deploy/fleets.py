"""Fleets (the ``fleets:`` section of ``configs/targets.yaml``): targets released together, with a strategy.

    all-at-once   stage every host, switch every host, promote only if every smoke test passed
    rolling       ``batch_size`` hosts at a time, each out of the balancer's rotation while it swaps;
                  the first failure halts and puts the hosts already done back
    canary        ``canary.hosts`` first, then the monitor's verdict on them over ``canary.window_s``
                  decides: roll them back (a ``halt_on`` alarm) or go on with the rest (``canary.then``)

The optional ``balancer:`` block is the nginx in front of the fleet (``tasks.deploy.balancer``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.deploy.targets import DEFAULT_TARGETS, Target, load_targets
from tasks.errors import ConfigError
from tasks.settings import read_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Canary(_Strict):
    hosts: int = Field(1, ge=1)                   # the first N targets of the fleet's list
    window_s: float = Field(300, gt=0, le=24 * 3600)   # how long the monitor watches them
    check_every_s: float = Field(30, gt=0)        # a verdict this often within the window (a halt stops early)
    halt_on: Literal["critical", "warning"] = "critical"   # the alarm level that rolls the canary back
    then: Literal["rolling", "all-at-once"] = "rolling"    # how the rest of the fleet follows
    monitoring: Path | None = None                # the monitor's thresholds; None: configs/monitoring.yaml


class Balancer(_Strict):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=1, le=65535)
    config_dir: Path = Path("nginx")              # relative: under $PIPELINE_HOME
    nginx: str = "nginx"                          # the binary that reloads (``-p config_dir -c nginx.conf``)
    reload_command: list[str] | None = None       # instead, e.g. [sudo, systemctl, reload, nginx]
    reload_timeout_s: float = Field(30, gt=0)     # the new generation answering, old workers gone
    proxy_tries: int = Field(3, ge=1, le=10)      # hosts one /predict may be tried on
    proxy_timeout_s: float = Field(30, gt=0)


class Fleet(_Strict):
    name: str
    targets: list[str] = Field(min_length=1)
    strategy: Literal["all-at-once", "rolling", "canary"] = "rolling"
    batch_size: int = Field(1, ge=1)              # rolling, and a canary's rest when it rolls
    pause_s: float = Field(0, ge=0, le=3600)      # rolling: between batches
    max_parallel_transfers: int = Field(4, ge=1, le=64)
    canary: Canary = Canary()
    balancer: Balancer | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Fleet:
        duplicated = sorted({t for t in self.targets if self.targets.count(t) > 1})
        if duplicated:
            raise ValueError(f"targets listed twice: {duplicated}")
        if self.strategy == "rolling" and self.balancer is not None and self.batch_size >= len(self.targets):
            raise ValueError(f"batch_size {self.batch_size} would take all {len(self.targets)} hosts out of the "
                             "balancer at once; at most len(targets) - 1")
        if self.strategy == "canary" and self.canary.hosts >= len(self.targets):
            raise ValueError(f"canary.hosts {self.canary.hosts} leaves no host to compare with; at most "
                             f"{len(self.targets) - 1}")
        return self


def load_fleets(data: dict, path: Path | str, targets: dict[str, Target], pipeline_home: Path) -> dict[str, Fleet]:
    """The ``fleets`` section of an inventory already read (``data``), checked against its ``targets``.

    Raises:
        ConfigError: names the file and the key (``fleets.web.batch_size``), and lists unknown targets.
    """
    fleets = {}
    section = data.get("fleets") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: fleets: expected a mapping of fleet names")
    for name, spec in section.items():
        try:
            fleet = Fleet.model_validate({"name": name, **(spec or {})})
        except ValidationError as exc:
            parts = [f"fleets.{name}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise ConfigError(f"{path}: " + "; ".join(parts)) from None
        unknown = [t for t in fleet.targets if t not in targets]
        if unknown:
            raise ConfigError(f"{path}: fleets.{name}.targets: unknown target(s) {unknown}; known: {sorted(targets)}")
        if fleet.balancer is not None and not fleet.balancer.config_dir.is_absolute():
            fleet = fleet.model_copy(update={"balancer": fleet.balancer.model_copy(
                update={"config_dir": pipeline_home / fleet.balancer.config_dir})})
        fleets[name] = fleet
    return fleets


def inventory_path(path: str | Path | None) -> Path:
    """The inventory ``load_targets`` reads: ``path``, else ``$PIPELINE_TARGETS``, else configs/targets.yaml."""
    return Path(path or os.environ.get("PIPELINE_TARGETS") or DEFAULT_TARGETS)


def load_fleet(path: str | Path | None, pipeline_home: Path, name: str) -> tuple[Fleet, list[Target]]:
    """One fleet of the inventory and its targets, in the fleet's order."""
    path = inventory_path(path)
    targets = load_targets(path, pipeline_home)
    fleet = pick_fleet(load_fleets(read_config(path, "target inventory"), path, targets, pipeline_home), name,
                       str(path))
    return fleet, [targets[t] for t in fleet.targets]


def pick_fleet(fleets: dict[str, Fleet], name: str, source: str = "targets") -> Fleet:
    if name not in fleets:
        known = sorted(fleets) or "none (add a fleets: section)"
        raise ConfigError(f"{source}: unknown fleet {name!r}; known: {known}")
    return fleets[name]
