"""The local transport: the target host is a directory on this machine and a local server process.

Host commands run the host agent as every host runs it: the zipapp in ``<base_dir>/bin/host-agent.pyz``
(written when its content changed).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

from serving.contract.digest import CHUNK, sha256_copy
from serving.contract.files import replacing
from tasks.constants import HOST_AGENT, ROOT
from tasks.deploy.package import Bundle, build_host_agent
from tasks.deploy.targets import Target
from tasks.deploy.transports.base import (
    MARGIN_S,
    BytesSent,
    TransferReceipt,
    host_command,
    parse_host_output,
    wait_timeout,
)
from tasks.errors import TransferError


def _counted(blocks: Iterator[bytes], sent: BytesSent) -> Iterator[bytes]:
    for block in blocks:
        yield block
        sent(len(block))


class LocalTransport:
    def __init__(self, target: Target) -> None:
        self.target = target

    def put(self, bundle: Bundle) -> TransferReceipt:
        """Copy into ``incoming/`` through a part file hashed as it is written, renamed only if the SHA-256 matches."""
        incoming = self.target.base_dir / "incoming"
        try:
            incoming.mkdir(parents=True, exist_ok=True)
            dest = incoming / bundle.path.name
            sent = BytesSent("local", self.target, bundle.path.stat().st_size)
            with bundle.path.open("rb") as src, replacing(dest) as out:
                digest = sha256_copy(_counted(iter(lambda: src.read(CHUNK), b""), sent), out)
                if digest != bundle.sha256:    # raised inside: the part file is removed, never renamed
                    raise TransferError(f"target {self.target.name}: transfer: checksum mismatch for {dest}")
        except OSError as exc:
            raise TransferError(f"target {self.target.name} ({self.target.base_dir}): transfer: {exc}") from None
        return TransferReceipt(self.target.name, str(dest), digest, dest.stat().st_size)

    def host(self, *args: str, stdin: str | None = None) -> dict:
        # The local target defaults to the pipeline's own interpreter: it has the serving requirements.
        python = self.target.python or sys.executable
        try:
            agent = build_host_agent(self.target.base_dir / "bin" / HOST_AGENT)
        except OSError as exc:
            raise TransferError(f"target {self.target.name} ({self.target.base_dir}): {args[0]}: cannot install the "
                                f"host agent: {exc}") from None
        cmd = host_command(self.target, str(agent), python, python, *args)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, input=stdin or "",
                              timeout=wait_timeout(self.target, args[0], self.target.start_timeout_s + MARGIN_S))
        return parse_host_output(self.target, args[0], proc.stdout, proc.stderr)
