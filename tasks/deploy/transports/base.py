"""The transport seam: what every transport does, and the receipt it returns.

A transport moves a bundle to a target host (``put``) and runs one host operation there
(``host``: ``python3 <base_dir>/bin/host-agent.pyz COMMAND …``, which prints one JSON object). Everything
a host does is in that one standard-library agent (``serving/host``, shipped as a zipapp by
``tasks.deploy.package.build_host_agent``), whatever the transport.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Protocol

from tasks.deploy.package import Bundle
from tasks.deploy.targets import Target
from tasks.errors import TransferError
from tasks.progress import BYTES, Progress


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

    def host(self, *args: str, stdin: str | None = None) -> dict:
        """Run the host agent (``bin/host-agent.pyz *args``) on the host and return its JSON answer.

        ``stdin`` is written to the command's standard input: secrets (a presigned URL) go there,
        never on the command line, which every user of the host can read (``ps``).

        Raises:
            TransferError: the host could not be reached or answered ``ok: false``.
        """
        ...


VENV_STEP = "ensure-venv"
TRANSFER_EVERY_S = 1.0   # a transfer reports its bytes at most once a second (and when it is done)
MARGIN_S = 60   # what a transport waits beyond the host command's own timeout


class BytesSent:
    """A transfer's bytes, reported as they go: ``transfer ssh host-a: 4.0 MB/12.4 MB · 0:02 elapsed · ~0:04 left``.

    Called with each block's size; ``start``: what had arrived before (a resumed upload). Safe to call from
    several threads (boto3's multipart upload).
    """

    def __init__(self, kind: str, target: Target, size: int, start: int = 0, progress: Progress | None = None) -> None:
        self.what, self.size, self.sent = f"transfer {kind} {target.name}", size, start
        self.progress = progress or Progress(every_s=TRANSFER_EVERY_S)
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self.sent += count
            self.progress.step(self.what, self.sent, self.size, BYTES)


def host_command(target: Target, script: str, runner: str, server_python: str | None, *args: str) -> list[str]:
    """The command line of one host operation: ``runner`` (a Python 3) runs the host agent ``script``.

    ``server_python`` None lets the host run the server in the release's own virtual environment.
    The environment's build (``ensure-venv``) gets the target's ``venv_timeout_s``, the other
    operations its ``start_timeout_s``; ``start`` gets the target's ``workers`` (unset: the server's default).
    """
    timeout = target.venv_timeout_s if args[0] == VENV_STEP else target.start_timeout_s
    return [runner, script, *args, "--base-dir", str(target.base_dir), "--host", target.host,
            "--port", str(target.port), *(["--python", server_python] if server_python else []),
            *(["--workers", str(target.workers)] if target.workers and args[0] == "start" else []),
            "--timeout", str(timeout)]


def wait_timeout(target: Target, command: str, usual: float) -> float:
    """How long a transport waits for one host command: ``usual``, or longer for the environment's build
    (a first ``pip install`` on a fresh host takes far longer than any other operation)."""
    return max(usual, target.venv_timeout_s + MARGIN_S) if command == VENV_STEP else usual


def parse_host_output(target: Target, step: str, stdout: str, stderr: str) -> dict:
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise TransferError(f"target {target.name}: {step}: host command failed: {(stderr or stdout)[-800:]}") \
            from None
    if not result.get("ok"):
        raise TransferError(f"target {target.name}: {step}: {result.get('error')}")
    return result
