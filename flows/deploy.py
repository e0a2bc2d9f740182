"""The deploy half: package → transfer → start → smoke-test → promote, and rollback.

``champion`` moves only after the smoke test passed on every target of the run; if any
target fails, the targets already switched are put back on their previous version and the
registry is not touched.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction

from tasks.deploy import activate_on, deploy_task, package_task, promote_task
from tasks.errors import ReleaseError
from tasks.registry import MlflowRegistry
from tasks.settings import load_settings
from tasks.targets import load_targets, pick_targets


@flow(name="deploy", validate_parameters=False)
def deploy_flow(version: str | None = None, targets: list[str] | None = None, targets_file: str | None = None,
                config: str | None = None, reason: str = "deploy") -> dict:
    """Deploy a registered version (default: the challenger) to targets, then promote it to champion."""
    logger = get_run_logger()
    started = time.perf_counter()
    settings = load_settings(config)
    chosen = pick_targets(load_targets(targets_file, settings.pipeline_home), targets or ["local"],
                          targets_file or "configs/targets.yaml")
    registry = MlflowRegistry(settings)
    mv = registry.resolve(version)
    version = str(mv.version)
    model_dir = Path(mv.tags["model_dir"])
    bundle, metadata = package_task(model_dir, settings.pipeline_home / "bundles")
    registry.log_bundle(version, bundle)
    # One transaction: if a later target or the promotion fails, every deploy-target task's
    # rollback hook puts its host back on the version it served before (tasks/deploy.py).
    try:
        with transaction():
            deployments = [deploy_task(target, bundle, metadata) for target in chosen]
            promotion = promote_task(registry, version, reason, flow_run.get_id())
    except ReleaseError:
        logger.error("deploy of %s version %s failed; targets restored, champion unchanged", registry.name, version)
        raise
    return {"model": registry.name, "registry_version": version, "version": metadata.version,
            "release": metadata.release, "bundle": {"path": str(bundle.path), "sha256": bundle.sha256},
            "deployments": [d.to_dict() for d in deployments], **promotion,
            "seconds": round(time.perf_counter() - started, 3)}


@flow(name="rollback", validate_parameters=False)
def rollback_flow(target: str = "local", to_version: str | None = None, targets_file: str | None = None,
                  config: str | None = None, reason: str = "rollback") -> dict:
    """Serve the previous champion (or ``to_version``) on the target, smoke-test it, then move the alias."""
    logger = get_run_logger()
    settings = load_settings(config)
    (chosen,) = pick_targets(load_targets(targets_file, settings.pipeline_home), [target])
    registry = MlflowRegistry(settings)
    current, goal = registry.rollback_version(to_version)
    mv = registry.get_version(goal)
    deployment = activate_on(chosen, Path(mv.tags["model_dir"]), settings.pipeline_home / "bundles")
    change = registry.record_rollback(current, goal, reason, flow_run.get_id())
    logger.info("rolled back %s on %s: champion %s -> %s", registry.name, target, current, goal)
    return {"model": registry.name, "target": target, "deployment": deployment.to_dict(), **change}
