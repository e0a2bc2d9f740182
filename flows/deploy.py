"""The deploy half: package → transfer → start → smoke-test → promote, and rollback.

``champion`` moves only after the smoke test passed on every target of the run; if any
target fails, the targets already switched are put back on their previous version and the
registry is not touched. After the promotion every target is checked once more; a failure
there emits ``pipeline.alarm.critical``, which the ``rollback`` deployment answers.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction

from tasks.alarms import CRITICAL, emit_alarm
from tasks.deploy import activate_on, deploy_task, package_task, promote_task, url_of
from tasks.errors import ReleaseError
from tasks.registry import MlflowRegistry
from tasks.reports import deploy_report, publish
from tasks.settings import load_settings
from tasks.smoke import smoke_test
from tasks.targets import load_targets, pick_targets


@flow(name="deploy", validate_parameters=False)
def deploy_flow(version: str | None = None, targets: list[str] | None = None, targets_file: str | None = None,
                config: str | None = None, reason: str = "deploy", approval: dict | None = None) -> dict:
    """Deploy a registered version (default: the challenger) to targets, then promote it to champion.

    ``approval`` (approver, reason), given by the promote flow, is recorded on the version's tags."""
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
            promotion = promote_task(registry, version, reason, flow_run.get_id(), approval)
    except ReleaseError:
        logger.error("deploy of %s version %s failed; targets restored, champion unchanged", registry.name, version)
        raise
    # The check after promotion: each target still serves the promoted version, healthy and faithful.
    checks = [smoke_test(t.name, url_of(t), metadata) for t in chosen]
    result = {"model": registry.name, "registry_version": version, "version": metadata.version,
              "release": metadata.release, "bundle": {"path": str(bundle.path), "sha256": bundle.sha256},
              "deployments": [d.to_dict() for d in deployments], **promotion, "approval": approval,
              "post_promotion_checks": [c.to_dict() for c in checks],
              "seconds": round(time.perf_counter() - started, 3)}
    publish("deploy-report", registry.name, deploy_report(result, f"Deploy of {registry.name} version {version}"),
            f"{registry.name} v{version} on {', '.join(t.name for t in chosen)}")
    failed = [c for c in checks if not c.passed]
    for check in failed:
        emit_alarm(CRITICAL, target=check.target, model=registry.name, version=version,
                   reason="check after promotion failed: " + "; ".join(check.failures))
    if failed:
        raise ReleaseError(f"version {version} was promoted, but the check after promotion failed on "
                           f"{', '.join(c.target for c in failed)}; {CRITICAL} emitted (the rollback deployment "
                           f"answers it; by hand: python -m flows rollback --target {failed[0].target})")
    return result


@flow(name="rollback", validate_parameters=False)
def rollback_flow(target: str = "local", to_version: str | None = None, targets_file: str | None = None,
                  config: str | None = None, reason: str = "rollback", failing_version: str | None = None) -> dict:
    """Serve the previous champion (or ``to_version``) on the target, smoke-test it, then move the alias.

    ``failing_version`` (from an alarm): roll back only while that version is still the champion, so
    that several alarms about one bad version roll back once."""
    logger = get_run_logger()
    settings = load_settings(config)
    (chosen,) = pick_targets(load_targets(targets_file, settings.pipeline_home), [target])
    registry = MlflowRegistry(settings)
    if failing_version:
        champion = registry.champion()
        if champion is None or champion.version != str(failing_version):
            logger.warning("alarm about version %s, but the champion is %s: nothing to roll back", failing_version,
                           champion.version if champion else "none")
            return {"model": registry.name, "target": target, "skipped": True,
                    "champion_before": champion.version if champion else None,
                    "champion_after": champion.version if champion else None}
    current, goal = registry.rollback_version(to_version)
    mv = registry.get_version(goal)
    deployment = activate_on(chosen, Path(mv.tags["model_dir"]), settings.pipeline_home / "bundles")
    change = registry.record_rollback(current, goal, reason, flow_run.get_id())
    logger.info("rolled back %s on %s: champion %s -> %s", registry.name, target, current, goal)
    result = {"model": registry.name, "target": target, "skipped": False, "deployment": deployment.to_dict(), **change}
    publish("rollback-report", registry.name,
            f"# Rollback of {registry.name} on {target}\n\n- champion: {current} → **{goal}**\n- reason: {reason}\n"
            f"- target now serves export version {deployment.version} (smoke test passed, golden max |Δp| "
            f"{deployment.smoke.golden_max_abs_diff:.1e})\n", f"{registry.name}: {current} → {goal} on {target}")
    return result
