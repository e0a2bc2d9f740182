"""Put a bundle on a target host, start or hot-load it, smoke-test it — and undo on failure."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from serving.contract.digest import sha256_file
from serving.contract.metadata import METADATA_FILE, ModelMetadata, read_metadata
from tasks.deploy.package import Bundle, package_version
from tasks.deploy.smoke import SmokeReport, smoke_test
from tasks.deploy.targets import Target, url_of
from tasks.deploy.transports import TransferReceipt, Transport, transport_for
from tasks.errors import SmokeTestFailed

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


@dataclass(frozen=True)
class Restore:
    """What putting a host back after a failed deploy really did."""

    target: str
    outcome: str                 # restored | stopped | unchanged | FAILED
    version: str | None          # the version it was to serve again (None: no server ran before)
    error: str | None = None     # why it could not be put back

    @property
    def ok(self) -> bool:
        return self.outcome != "FAILED"

    def __str__(self) -> str:
        if self.outcome == "restored":
            return f"target {self.target} restored to version {self.version}"
        if self.outcome == "stopped":
            return f"target {self.target} stopped (no server ran there before)"
        if self.outcome == "unchanged":
            return f"target {self.target} left as it was"
        goal = f"version {self.version}" if self.version else "no server"
        return f"target {self.target} could NOT be put back on {goal}: {self.error}"

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": str(self)}


def deploy_to(target: Target, bundle: Bundle, metadata: ModelMetadata) -> Deployment:
    """Transfer, unpack, start or hot-load, smoke-test; on a failed smoke test the host goes back.

    Raises:
        TransferError: the bundle did not arrive or the host refused it (nothing changed there).
        SmokeTestFailed: the host was put back on its previous version first (or could not be: the
            error's ``restore`` says which).
    """
    return switch_on(target, bundle, metadata, stage_on(target, bundle, metadata))


def stage_on(target: Target, bundle: Bundle, metadata: ModelMetadata, uploaded: str | None = None) -> TransferReceipt:
    """Everything before the switch, which leaves what the host serves alone: transfer, unpack, and the
    release's environment. ``uploaded``: the bundle's S3 key, already uploaded once for the whole fleet
    (the host only fetches it).

    Raises:
        TransferError: the bundle did not arrive, the host refused it or its environment could not be built.
    """
    transport = transport_for(target)
    receipt = transport.fetch(bundle, uploaded) if uploaded is not None else transport.put(bundle)
    transport.host("unpack", "--bundle", receipt.remote_path, "--version", metadata.version)
    transport.host("ensure-venv", "--version", metadata.version)
    return receipt


def switch_on(target: Target, bundle: Bundle, metadata: ModelMetadata, receipt: TransferReceipt) -> Deployment:
    """Start or hot-load a staged version, smoke-test it; on a failed smoke test the host goes back.

    Raises:
        TransferError: the host could not be reached or refused the version (it serves what it served).
        SmokeTestFailed: as ``deploy_to``.
    """
    transport = transport_for(target)
    # stage_on built the release's environment: straight to the start
    started = transport.host("start", "--version", metadata.version, "--metadata-sha256",
                             bundle.files[_metadata_entry(metadata)])
    return _smoke_or_restore(target, metadata, started.get("previous_version"), started["action"], receipt)


def upload_once(targets: list[Target], bundle: Bundle) -> dict[str, str]:
    """For the s3 targets of a fleet: the bundle uploaded once per bucket and prefix (and endpoint); returns
    each such target's key, for its host to fetch (``stage_on``). Other transports deliver per host."""
    keys: dict[tuple, str] = {}
    out = {}
    for target in targets:
        if target.transport != "s3":
            continue
        where = (target.endpoint_url, target.region, target.bucket, target.prefix)
        if where not in keys:
            keys[where] = transport_for(target).upload(bundle)
            log.info("%s uploaded once to s3://%s/%s for every host of the fleet there", bundle.path.name,
                     target.bucket, keys[where])
        out[target.name] = keys[where]
    return out


def _metadata_entry(metadata: ModelMetadata) -> str:
    return f"model/{metadata.model_name}/{metadata.version}/{METADATA_FILE}"


def activate_on(target: Target, model_dir: Path, bundles_dir: Path) -> Deployment:
    """Make an already registered version the one a host serves (rollback): load or switch, then smoke-test."""
    metadata = read_metadata(model_dir)
    metadata_sha256 = sha256_file(Path(model_dir) / METADATA_FILE)   # the export was checked against the registry
    transport = transport_for(target)
    status = transport.host("status")
    receipt = None
    if metadata.version not in status.get("releases", []):
        bundle, _ = package_version(model_dir, bundles_dir)
        receipt = transport.put(bundle)
        transport.host("unpack", "--bundle", receipt.remote_path, "--version", metadata.version)
    if status.get("running"):
        transport.host("activate", "--version", metadata.version, "--metadata-sha256", metadata_sha256)
        action, previous = "activate", status.get("default_version")
    else:
        action, previous = _start(transport, metadata.version, metadata_sha256)["action"], None
    return _smoke_or_restore(target, metadata, previous, action, receipt)


def _start(transport: Transport, version: str, metadata_sha256: str) -> dict:
    """Start or hot-load ``version``; its environment is built first, as a step of its own.

    A first build (pip) on a fresh host takes far longer than a start: ``ensure-venv`` runs under the
    target's ``venv_timeout_s``, ``start`` under the usual timeout. A host that runs the server with a
    given interpreter (the target's ``python``) answers ``ensure-venv`` at once; an environment that
    cannot be built fails the deploy before the running server is touched. The server checks the
    version's metadata.json against ``metadata_sha256`` (what was registered and packaged).
    """
    transport.host("ensure-venv", "--version", version)
    return transport.host("start", "--version", version, "--metadata-sha256", metadata_sha256)


def _smoke_or_restore(target: Target, metadata: ModelMetadata, previous: str | None, action: str,
                      receipt: TransferReceipt | None) -> Deployment:
    report = smoke_test(target.name, url_of(target), metadata)
    deployment = Deployment(target.name, url_of(target), metadata.version, previous, action, receipt, report)
    if not report.passed:
        raise SmokeTestFailed(target.name, report.failures, restore(target, deployment))
    return deployment


def restore(target: Target, deployment: Deployment) -> Restore:
    """Put a host back where it was before ``deployment`` (the previous default, or no server) and
    say what happened. Never raises: the other hosts of the run still need theirs."""
    previous = deployment.previous_version
    try:
        transport = transport_for(target)
        if previous:
            transport.host("activate", "--version", previous)
            outcome = "restored"
        elif deployment.action == "start":
            transport.host("stop")
            outcome = "stopped"
        else:
            outcome = "unchanged"
    except Exception as exc:
        result = Restore(target.name, "FAILED", previous, f"{type(exc).__name__}: {exc}")
        log.error("%s", result)
        return result
    result = Restore(target.name, outcome, previous)
    log.warning("%s", result)
    return result
