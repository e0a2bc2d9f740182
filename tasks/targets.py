"""Target hosts (``configs/targets.yaml``) and how bundles reach them.

A transport moves a bundle to the host and runs ``python -m serving.host`` there;
everything a host does is in that one module, whatever the transport.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.calibration import sha256_file
from tasks.errors import ConfigError, TransferError
from tasks.package import Bundle

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARGETS = ROOT / "configs" / "targets.yaml"


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    transport: Literal["local", "ssh", "s3"] = "local"
    base_dir: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    python: str | None = None            # the server's interpreter; unset: a venv from the bundle (local: this one)
    start_timeout_s: float = Field(180, gt=0)
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


@dataclass(frozen=True)
class TransferReceipt:
    target: str
    remote_path: str
    sha256: str
    bytes: int
    resumed_from: int = 0


def load_targets(path: str | Path | None, pipeline_home: Path) -> dict[str, Target]:
    """Read the inventory (``path``, else ``$PIPELINE_TARGETS``, else configs/targets.yaml); relative base
    directories live under the pipeline home."""
    import yaml

    path = Path(path or os.environ.get("PIPELINE_TARGETS") or DEFAULT_TARGETS)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read targets: {exc.strerror}") from None
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


class Transport(Protocol):
    target: Target

    def put(self, bundle: Bundle) -> TransferReceipt: ...

    def host(self, *args: str) -> dict: ...


class LocalTransport:
    """The target host is a directory on this machine and a local serving process."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def put(self, bundle: Bundle) -> TransferReceipt:
        incoming = self.target.base_dir / "incoming"
        try:
            incoming.mkdir(parents=True, exist_ok=True)
            dest = incoming / bundle.path.name
            part = dest.with_name(dest.name + ".part")
            shutil.copyfile(bundle.path, part)
            digest = sha256_file(part)
            if digest != bundle.sha256:
                part.unlink(missing_ok=True)
                raise TransferError(f"target {self.target.name}: transfer: checksum mismatch for {dest}")
            os.replace(part, dest)
        except OSError as exc:
            raise TransferError(f"target {self.target.name} ({self.target.base_dir}): transfer: {exc}") from None
        return TransferReceipt(self.target.name, str(dest), digest, dest.stat().st_size)

    def host(self, *args: str) -> dict:
        # The local target defaults to the pipeline's own interpreter: it has the serving requirements.
        python = self.target.python or sys.executable
        cmd = host_command(self.target, str(HOST_SCRIPT), python, python, *args)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=self.target.start_timeout_s + 60)
        return parse_host_output(self.target, args[0], proc.stdout, proc.stderr)


def transport_for(target: Target) -> Transport:
    if target.transport == "local":
        return LocalTransport(target)
    if target.transport == "ssh":
        from tasks.ssh import SSHTransport

        return SSHTransport(target)
    if target.transport == "s3":
        from tasks.s3 import S3Transport

        return S3Transport(target)
    raise ConfigError(f"target {target.name}: the {target.transport} transport is not implemented yet")


HOST_SCRIPT = ROOT / "serving" / "host.py"


def host_command(target: Target, script: str, runner: str, server_python: str | None, *args: str) -> list[str]:
    """The command line of one host operation (``serving/host.py`` is standard library only).

    ``server_python`` None lets the host run the server in the release's own virtual environment.
    """
    return [runner, script, *args, "--base-dir", str(target.base_dir), "--host", target.host,
            "--port", str(target.port), *(["--python", server_python] if server_python else []),
            "--timeout", str(target.start_timeout_s)]


def parse_host_output(target: Target, step: str, stdout: str, stderr: str) -> dict:
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise TransferError(f"target {target.name}: {step}: host command failed: {(stderr or stdout)[-800:]}") \
            from None
    if not result.get("ok"):
        raise TransferError(f"target {target.name}: {step}: {result.get('error')}")
    return result
