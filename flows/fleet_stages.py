"""The fleet release's stages as Prefect tasks (``flows/stages.py`` holds the single-host ones).

Each wrapper calls one plain function (``tasks.deploy``, ``tasks.monitoring.canary``), logs one line
and returns its typed result. ``in_parallel`` runs one task over many hosts on a bounded thread pool
(Prefect's ``ThreadPoolTaskRunner``): every host's outcome comes back, failures included.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from serving.contract.metadata import ModelMetadata
from tasks.deploy.balancer import NginxBalancer, State
from tasks.deploy.deploy import Deployment, Restore, activate_on, restore, stage_on, switch_on
from tasks.deploy.package import Bundle
from tasks.deploy.targets import Target
from tasks.deploy.transports import TransferReceipt
from tasks.monitoring.canary import Verdict, watch_canary
from tasks.monitoring.settings import MonitoringSettings
from tasks.progress import Progress


@task(name="stage", cache_policy=NO_CACHE, task_run_name="stage-{target.name}")
def stage_task(target: Target, bundle: Bundle, metadata: ModelMetadata, uploaded: str | None) -> TransferReceipt:
    receipt = stage_on(target, bundle, metadata, uploaded)
    get_run_logger().info("target %s: %s staged at %s (%d bytes%s)", target.name, bundle.path.name,
                          receipt.remote_path, receipt.bytes, ", fetched from S3" if uploaded else "")
    return receipt


@task(name="switch", cache_policy=NO_CACHE, task_run_name="switch-{target.name}")
def switch_task(target: Target, bundle: Bundle, metadata: ModelMetadata, receipt: TransferReceipt) -> Deployment:
    deployment = switch_on(target, bundle, metadata, receipt)
    get_run_logger().info("target %s: %s version %s (was %s); smoke test passed", target.name, deployment.action,
                          deployment.version, deployment.previous_version or "not running")
    return deployment


@task(name="activate", cache_policy=NO_CACHE, task_run_name="activate-{target.name}")
def activate_task(target: Target, model_dir: Path, bundles_dir: Path) -> Deployment:
    deployment = activate_on(target, model_dir, bundles_dir)
    get_run_logger().info("target %s: %s version %s (was %s); smoke test passed", target.name, deployment.action,
                          deployment.version, deployment.previous_version or "not running")
    return deployment


@task(name="restore", cache_policy=NO_CACHE, task_run_name="restore-{target.name}")
def restore_task(target: Target, deployment: Deployment) -> Restore:
    result = restore(target, deployment)
    (get_run_logger().info if result.ok else get_run_logger().error)("%s", result)
    return result


@task(name="balancer", cache_policy=NO_CACHE)
def balancer_task(balancer: NginxBalancer, drain: tuple[str, ...] = (), undrain: tuple[str, ...] = ()) -> State:
    drained = (balancer.state().drained | set(drain)) - set(undrain)
    state = balancer.apply(drained)
    get_run_logger().info("balancer %s: generation %d in effect; out of rotation: %s", balancer.url,
                          state.generation, ", ".join(sorted(state.drained)) or "none")
    return state


@task(name="canary-verdict", cache_policy=NO_CACHE)
def canary_task(targets: list[Target], registry_version: str, metadata: ModelMetadata, cfg: MonitoringSettings,
                window_s: float, check_every_s: float, halt_on: str, previous_export: str | None) -> Verdict:
    verdict = watch_canary(targets, registry_version, metadata, cfg, window_s, check_every_s, halt_on,
                           previous_export)
    logger = get_run_logger()
    if verdict.halt:
        logger.error("canary %s: HALT after %.1fs (%d checks): %s", ", ".join(t.name for t in targets),
                     verdict.seconds, verdict.checks, "; ".join(verdict.reasons))
    else:
        logger.info("canary %s: clean over %.1fs (%d checks)%s", ", ".join(t.name for t in targets),
                    verdict.seconds, verdict.checks, ("; seen: " + "; ".join(verdict.reasons)) if verdict.reasons
                    else "")
    return verdict


def in_parallel(fn, targets: list[Target], limit: int, per_target: dict[str, dict] | None = None,
                **common) -> dict[str, object]:
    """``fn(target=…, **per_target[name], **common)`` for every target, at most ``limit`` at once; each
    target's result, or the exception it raised, in the targets' order. Each host is reported as it
    finishes: ``stage: host 2/4 (edge-2)``."""
    done: dict[str, object] = {}
    per_target = per_target or {}
    progress = Progress()
    with ThreadPoolTaskRunner(max_workers=max(1, min(limit, len(targets)))) as runner:
        futures = {runner.submit(fn, parameters={"target": t, **per_target.get(t.name, {}), **common}): t.name
                   for t in targets}
        for future in as_completed(list(futures)):
            name = futures[future]
            try:
                done[name] = future.result()
            except Exception as exc:   # each host's failure is its outcome; the flow decides what follows
                done[name] = exc
            progress.step(f"{fn.name}: host {len(done)}/{len(targets)} ({name})"
                          + (" failed" if isinstance(done[name], Exception) else ""), len(done), len(targets))
    return {t.name: done[t.name] for t in targets}
