"""The target inventory (``configs/targets.yaml``): which hosts a release goes to and how.

Each target names its transport (``local``, ``ssh``, ``s3``: ``tasks.deploy.transports``), its
base directory on the host and the server's address. Credentials never live here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.constants import CONFIGS, VENV_TIMEOUT_S
from tasks.errors import ConfigError
from tasks.settings import read_config

DEFAULT_TARGETS = CONFIGS / "targets.yaml"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    transport: Literal["local", "ssh", "s3"] = "local"
    base_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    python: str | None = None            # the server's interpreter; unset: a venv from the bundle (local: this one)
    start_timeout_s: float = Field(180, gt=0)
    venv_timeout_s: float = Field(VENV_TIMEOUT_S, gt=0)   # the host's first environment build (pip), python unset
    # Server processes on the host (a number, or auto: one per CPU there; unset: the server's default, auto on a
    # host, since the pipeline always gives it a state file). They share one desired state and one monitoring
    # store: counts and /feedback rows are the host's, whichever process answers (serving/monitoring/).
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] | None = None
    # ssh
    user: str | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    key_file: Path | None = None
    known_hosts: Path | None = None      # host keys are always checked against this file
    auto_add_host_key: bool = False      # opt-in: trust an unknown key on first use (logged as a warning)
    connect_timeout_s: float = Field(15, gt=0)
    command_timeout_s: float = Field(300, gt=0)
    # s3: the bundle goes to s3://bucket/prefix/, the host fetches it (through a presigned URL);
    # host commands run over ssh when `user` is set, else on this machine. Credentials come from
    # the usual AWS environment or profile, never from this file.
    bucket: str | None = None
    prefix: str = "releases"
    endpoint_url: str | None = None
    region: str = "us-east-1"


def load_targets(path: str | Path | None, pipeline_home: Path) -> dict[str, Target]:
    """Read the inventory (``path``, else ``$PIPELINE_TARGETS``, else configs/targets.yaml); relative base
    directories live under the pipeline home."""
    path = Path(path or os.environ.get("PIPELINE_TARGETS") or DEFAULT_TARGETS)
    data = read_config(path, "target inventory")
    targets = {}
    for name, spec in (data.get("targets") or {}).items():
        try:
            target = Target.model_validate({"name": name, **(spec or {})})
        except ValidationError as exc:
            parts = [f"targets.{name}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise ConfigError(f"{path}: " + "; ".join(parts)) from None
        if not target.base_dir.is_absolute():
            target = target.model_copy(update={"base_dir": pipeline_home / target.base_dir})
        targets[name] = target
    return targets


def pick_targets(all_targets: dict[str, Target], names: list[str], source: str = "targets") -> list[Target]:
    unknown = [n for n in names if n not in all_targets]
    if unknown:
        raise ConfigError(f"{source}: unknown target(s) {unknown}; known: {sorted(all_targets)}")
    return [all_targets[n] for n in names]


def url_of(target: Target) -> str:
    """Where the target's model server answers."""
    return f"http://{target.host}:{target.port}"
