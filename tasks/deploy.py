"""Stage 7: put a bundle on a target host, start or hot-load it, smoke-test it — and undo on failure."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serving.metadata import ModelMetadata, read_metadata
from serving.schema import FeatureList, FeatureSpec, dump_feature_list, dump_schema, schema_from_dict
from tasks.errors import ReleaseError, SmokeTestFailed
from tasks.package import Bundle, build_bundle
from tasks.smoke import SmokeReport, smoke_test
from tasks.targets import Target, TransferReceipt, transport_for

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


def package_version(model_dir: Path, bundles_dir: Path) -> tuple[Bundle, ModelMetadata]:
    """Bundle an exported version; its configs are written from its own metadata (what it was trained on)."""
    metadata = read_metadata(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        schema_path, features_path = Path(tmp) / "schema.yaml", Path(tmp) / "feature_list.csv"
        dump_schema(schema_from_dict(metadata.schema_), schema_path)
        dump_feature_list(FeatureList(features=tuple(FeatureSpec.model_validate(f) for f in metadata.feature_list)),
                          features_path)
        bundle = build_bundle(model_dir, metadata.model_name, metadata.version, metadata.release, schema_path,
                              features_path, bundles_dir)
    return bundle, metadata


def url_of(target: Target) -> str:
    return f"http://{target.host}:{target.port}"


def deploy_to(target: Target, bundle: Bundle, metadata: ModelMetadata) -> Deployment:
    """Transfer, unpack, start or hot-load, smoke-test; on a failed smoke test the host goes back.

    Raises:
        TransferError: the bundle did not arrive or the host refused it (nothing changed there).
        SmokeTestFailed: the host was put back on its previous version first.
    """
    transport = transport_for(target)
    receipt = transport.put(bundle)
    transport.host("unpack", "--bundle", receipt.remote_path, "--version", metadata.version)
    started = transport.host("start", "--version", metadata.version)
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
        action, previous = transport.host("start", "--version", metadata.version)["action"], None
    return _smoke_or_restore(target, metadata, previous, action, receipt)


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


# ---------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="package", cache_policy=NO_CACHE)
def package_task(model_dir: Path, bundles_dir: Path) -> tuple[Bundle, ModelMetadata]:
    from prefect import get_run_logger

    bundle, metadata = package_version(model_dir, bundles_dir)
    get_run_logger().info("bundle %s (%d files, sha256 %s…)", bundle.path, len(bundle.files), bundle.sha256[:12])
    return bundle, metadata


@task(name="deploy-target", cache_policy=NO_CACHE)
def deploy_task(target: Target, bundle: Bundle, metadata: ModelMetadata) -> Deployment:
    from prefect import get_run_logger
    from prefect.transactions import get_transaction

    deployment = deploy_to(target, bundle, metadata)
    txn = get_transaction()
    if txn is not None:   # what the rollback hook needs to put this host back
        txn.set("target", target)
        txn.set("deployment", deployment)
    get_run_logger().info("target %s: %s version %s at %s; smoke passed (golden |Δp| %.1e, p50 %.2f ms)",
                          target.name, deployment.action, deployment.version, deployment.url,
                          deployment.smoke.golden_max_abs_diff, deployment.smoke.latency_ms_p50)
    return deployment


@deploy_task.on_rollback
def _undo_deploy(txn) -> None:
    """A later step of the run failed (another target, the promotion): put this host back."""
    restore(txn.get("target"), txn.get("deployment"))


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(registry, version: str, reason: str, run_id: str | None, approval: dict | None = None) -> dict:
    from prefect import get_run_logger

    promotion = registry.promote(version, reason, run_id, approval)
    get_run_logger().info("champion: %s -> %s", promotion["champion_before"], promotion["champion_after"])
    return promotion
