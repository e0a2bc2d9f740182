"""The transport seam: what every transport does, and the receipt it returns.

A transport moves a bundle to a target host (``put``) and runs one host operation there
(``host``: ``serving/host.py COMMAND …``, which prints one JSON object). Everything a host
does is in that one standard-library script, whatever the transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from tasks.deploy.package import Bundle
from tasks.deploy.targets import Target
from tasks.errors import TransferError


@dataclass(frozen=True)
class TransferReceipt:
    target: str
    remote_path: str
    sha256: str
    bytes: int
    resumed_from: int = 0


class Transport(Protocol):
    target: Target

    def put(self, bundle: Bundle) -> TransferReceipt:
        """Deliver the bundle to the host's ``incoming/``, checked against its SHA-256.

        Raises:
            TransferError: it did not arrive intact (names the target, host and step).
        """
        ...

    def host(self, *args: str) -> dict:
        """Run ``serving/host.py *args`` on the host and return its JSON answer.

        Raises:
            TransferError: the host could not be reached or answered ``ok: false``.
        """
        ...


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
