"""How bundles reach target hosts: one ``Transport`` protocol, one implementation per kind.

    base.py    the Transport protocol, TransferReceipt, the host command line and its answer
    local.py   a directory on this machine and a local server process
    ssh.py     paramiko: checked host keys, resumable SFTP, host-side SHA-256
    s3.py      boto3: multipart upload, the host fetches through a presigned URL

A target's ``transport`` field picks the implementation through ``TRANSPORTS``; nothing else
switches on it. The clients (paramiko, boto3) are imported when a transfer runs.
"""

from __future__ import annotations

from tasks.deploy.targets import Target
from tasks.deploy.transports.base import TransferReceipt, Transport
from tasks.deploy.transports.local import LocalTransport
from tasks.deploy.transports.s3 import S3Transport
from tasks.deploy.transports.ssh import SSHTransport
from tasks.errors import ConfigError

__all__ = ["TRANSPORTS", "LocalTransport", "S3Transport", "SSHTransport", "TransferReceipt", "Transport",
           "transport_for"]

TRANSPORTS: dict[str, type] = {"local": LocalTransport, "ssh": SSHTransport, "s3": S3Transport}


def transport_for(target: Target) -> Transport:
    """The transport the target's inventory entry names."""
    try:
        kind = TRANSPORTS[target.transport]
    except KeyError:
        raise ConfigError(f"target {target.name}: the {target.transport} transport is not implemented") from None
    return kind(target)
