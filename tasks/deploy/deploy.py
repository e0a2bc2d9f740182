"""Put a bundle on a target host, start or hot-load it, smoke-test it — and undo on failure."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from serving.metadata import ModelMetadata, read_metadata
from tasks.deploy.package import Bundle, package_version
from tasks.deploy.smoke import SmokeReport, smoke_test
from tasks.deploy.targets import Target, url_of
from tasks.deploy.transports import TransferReceipt, Transport, transport_for
from tasks.errors import ReleaseError, SmokeTestFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployment:
    target: str
    url: str
    version: str                 # export version now served
    previous_version: str | None  # what the host served before (None: the server was started)
    action: str                  # start | hot-load | activate
    receipt: TransferReceipt | None
    smoke: SmokeReport

    def to_dict(self) -> dict:
        return {"target": self.target, "url": self.url, "version": self.version,
                "previous_version": self.previous_version, "action": self.action,
                "bundle": self.receipt.remote_path if self.receipt else None, "smoke": self.smoke.to_dict()}


def deploy_to(target: Target, bundle: Bundle, metadata: ModelMetadata) -> Deployment:
    """Transfer, unpack, start or hot-load, smoke-test; on a failed smoke test the host goes back.

    Raises:
        TransferError: the bundle did not arrive or the host refused it (nothing changed there).
        SmokeTestFailed: the host was put back on its previous version first.
    """
    transport = transport_for(target)
    receipt = transport.put(bundle)
    transport.host("unpack", "--bundle", receipt.remote_path, "--version", metadata.version)
    started = _start(transport, metadata.version)
    return _smoke_or_restore(target, metadata, started.get("previous_version"), started["action"], receipt)


def activate_on(target: Target, model_dir: Path, bundles_dir: Path) -> Deployment:
    """Make an already registered version the one a host serves (rollback): load or switch, then smoke-test."""
    metadata = read_metadata(model_dir)
    transport = transport_for(target)
    status = transport.host("status")
    receipt = None
    if metadata.version not in status.get("releases", []):
        bundle, _ = package_version(model_dir, bundles_dir)
        receipt = transport.put(bundle)
        transport.host("unpack", "--bundle", receipt.remote_path, "--version", metadata.version)
    if status.get("running"):
        transport.host("activate", "--version", metadata.version)
        action, previous = "activate", status.get("default_version")
    else:
        action, previous = _start(transport, metadata.version)["action"], None
    return _smoke_or_restore(target, metadata, previous, action, receipt)


def _start(transport: Transport, version: str) -> dict:
    """Start or hot-load ``version``; its environment is built first, as a step of its own.

    A first build (pip) on a fresh host takes far longer than a start: ``ensure-venv`` runs under the
    target's ``venv_timeout_s``, ``start`` under the usual timeout. A host that runs the server with a
    given interpreter (the target's ``python``) answers ``ensure-venv`` at once; an environment that
    cannot be built fails the deploy before the running server is touched.
    """
    transport.host("ensure-venv", "--version", version)
    return transport.host("start", "--version", version)


def _smoke_or_restore(target: Target, metadata: ModelMetadata, previous: str | None, action: str,
                      receipt: TransferReceipt | None) -> Deployment:
    report = smoke_test(target.name, url_of(target), metadata)
    deployment = Deployment(target.name, url_of(target), metadata.version, previous, action, receipt, report)
    if not report.passed:
        restore(target, deployment)
        raise SmokeTestFailed(target.name, report.failures)
    return deployment


def restore(target: Target, deployment: Deployment) -> None:
    """Put a host back where it was before ``deployment``: the previous default, or no server."""
    transport = transport_for(target)
    try:
        if deployment.previous_version:
            transport.host("activate", "--version", deployment.previous_version)
        elif deployment.action == "start":
            transport.host("stop")
        log.warning("target %s restored to version %s", target.name, deployment.previous_version or "(stopped)")
    except ReleaseError as exc:
        log.error("target %s: could not restore the previous version: %s", target.name, exc)
