"""The deploy half: package → transfer → start → smoke-test → promote, and rollback.

``champion`` moves only after the smoke test passed on every target of the run; if any
target fails, the targets already switched are put back on their previous version and the
registry is not touched. What putting them back did (restored, stopped, or FAILED with the
error) is what the log, the report and the error say. After the promotion every target is
checked once more; a failure there emits ``pipeline.alarm.critical``, which the ``rollback``
deployment answers.

A deploy and a rollback of one model hold its ``serving`` lock for their whole run
(``flows/locks.py``), however they were started: the CLI's rollback waits for the rollback
deployment's runs (one at a time, prefect.yaml) and for a deploy in progress, and they for it.

Every run publishes its report as a keyed artifact, failed and skipped runs included.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction

from flows.fleet import fleet_deploy, fleet_rollback
from flows.locks import exclusive
from flows.models import settings_for
from flows.notify import check_after_promotion, publish
from flows.outcomes import deploy_outcome, ends_in, rollback_outcome
from flows.output import progress_to_run_log
from flows.stages import deploy_task, package_task, promote_task, restores
from tasks.constants import CHAMPION
from tasks.deploy.deploy import activate_on
from tasks.deploy.fleets import inventory_path, load_fleet
from tasks.deploy.targets import load_targets, pick_targets
from tasks.deploy.transports import transport_for
from tasks.errors import ConfigError, PostPromotionCheckFailed, RestoreFailed
from tasks.registry import MlflowRegistry
from tasks.release.reports import deploy_failed_report, deploy_report, rollback_report


def _version(value: str | int | None) -> str | None:
    """A registry version as the UI, the CLI (`--param version=3` sends a number) or an event gives it."""
    return None if value is None or value == "" else str(value)


@flow(name="deploy", validate_parameters=False)
@ends_in(deploy_outcome)
@progress_to_run_log()        # transfers report their bytes in the run log, from the CLI or a worker
def deploy_flow(version: str | int | None = None, targets: list[str] | None = None, targets_file: str | None = None,
                config: str | None = None, reason: str = "deploy", approval: dict | None = None,
                fleet: str | None = None, model: str | None = None) -> dict:
    """Deploy a registered version (default: the challenger) to targets, then promote it to champion.

    ``fleet``: release to that fleet of the inventory by its strategy instead (``flows/fleet.py``).
    ``approval`` (approver, reason), given by the promote flow, is recorded on the version's tags.
    ``model``: the registered model's name instead of the config's ``model_name``."""
    logger = get_run_logger()
    started = time.perf_counter()
    version = _version(version)
    settings = settings_for(config, model)
    if fleet:
        if targets:
            raise ConfigError(f"deploy: give targets or a fleet, not both (targets {targets}, fleet {fleet})")
        group, members = load_fleet(targets_file, settings.pipeline_home, fleet)
        source = str(inventory_path(targets_file))
        with exclusive(settings, "serving", f"fleet {fleet} release of version {version or '(the challenger)'}"):
            return fleet_deploy(settings, group, members, source, version, reason, approval, started)
    chosen = pick_targets(load_targets(targets_file, settings.pipeline_home), targets or ["local"],
                          targets_file or "configs/targets.yaml")
    with exclusive(settings, "serving", f"deploy of version {version or '(the challenger)'}"):
        return _deploy(logger, started, settings, chosen, version, reason, approval)


def _deploy(logger, started: float, settings, chosen: list, version: str | None, reason: str,
            approval: dict | None) -> dict:
    registry = MlflowRegistry(settings)
    mv = registry.resolve(version)
    version = str(mv.version)
    names = ", ".join(t.name for t in chosen)
    before = registry.alias_version(CHAMPION)
    before = str(before.version) if before is not None else None
    # One transaction: if a later target or the promotion fails, every deploy-target task's
    # rollback hook puts its host back on the version it served before (flows/stages.py).
    undo = None
    try:
        model_dir = registry.export_dir(mv, settings.pipeline_home / "registry-cache")
        bundle, metadata = package_task(model_dir, settings.pipeline_home / "bundles")
        registry.log_bundle(version, bundle)
        with transaction() as undo:
            deployments = [deploy_task(target, bundle, metadata) for target in chosen]
            promotion = promote_task(registry, version, reason, flow_run.get_id(), approval)
    except Exception as exc:
        error = _failed_deploy(logger, registry, version, names, before, restores(undo, exc), exc)
        if error is exc:
            raise
        raise error from exc
    # The check after promotion: each target still serves the promoted version, healthy and faithful.
    checks, failed, sent = check_after_promotion(registry.name, version, chosen, metadata)
    result = {"model": registry.name, "registry_version": version, "version": metadata.version,
              "release": metadata.release, "bundle": {"path": str(bundle.path), "sha256": bundle.sha256},
              "deployments": [d.to_dict() for d in deployments], **promotion, "approval": approval,
              "post_promotion_checks": [c.to_dict() for c in checks], "alarms_sent": sum(sent),
              "seconds": round(time.perf_counter() - started, 3)}
    publish("deploy-report", registry.name, deploy_report(result, f"Deploy of {registry.name} version {version}"),
            f"{registry.name} v{version} on {names}" + (": check after promotion FAILED" if failed else ""))
    if failed:
        raise PostPromotionCheckFailed(version, {c.target: c.failures for c in failed}, alarm_sent=all(sent))
    return result


def _failed_deploy(logger, registry: MlflowRegistry, version: str, names: str, before: str | None,
                   undone: list, exc: Exception) -> Exception:
    """Log and report what a failed deploy left behind (each host put back or not, the champion); returns
    the error to raise: ``exc``, or ``RestoreFailed`` when a host could not be put back."""
    champion = registry.champion_after_failure(before)
    stuck = [r for r in undone if not r.ok]
    hosts = "; ".join(str(r) for r in undone) or "no target had been switched"
    logger.error("deploy of %s version %s failed: %s; %s", registry.name, version, hosts, champion)
    publish("deploy-report", registry.name,
            deploy_failed_report(registry.name, version, names, exc, [r.to_dict() for r in undone], champion),
            f"{registry.name} v{version} on {names}: FAILED; "
            + (f"{', '.join(r.target for r in stuck)} NOT put back; " if stuck else "") + champion)
    error = exc
    if stuck:
        error = RestoreFailed(f"deploy of {registry.name} version {version} failed: {exc}\nand putting the hosts "
                              f"back failed: " + "; ".join(str(r) for r in stuck) + f"\n{champion}; check each "
                              "host with `python -m flows status --target NAME`")
    error.restores, error.champion = [r.to_dict() for r in undone], champion   # for the release report
    return error


@flow(name="rollback", validate_parameters=False)
@ends_in(rollback_outcome)
@progress_to_run_log()
def rollback_flow(target: str = "local", version: str | int | None = None, targets_file: str | None = None,
                  config: str | None = None, reason: str = "rollback",
                  failing_version: str | int | None = None, fleet: str | None = None,
                  model: str | None = None) -> dict:
    """Serve the previous champion (or ``version``) on the target, smoke-test it, then move the alias.

    ``failing_version`` (from an alarm): roll back only while that version is still the champion.
    When the alias was already moved back (an alarm from another target of the same release got
    there first), this target is only switched to the champion if it still serves the failing
    version; so a burst of alarms about one bad version rolls the registry back once and every
    alarmed target with it. ``fleet``: roll every host of that fleet back instead of ``target``. ``model``: the
    registered model's name instead of the config's ``model_name``."""
    logger = get_run_logger()
    version, failing_version = _version(version), _version(failing_version)
    settings = settings_for(config, model)
    if fleet:    # every host of the fleet, one at a time out of the balancer's rotation (flows/fleet.py)
        group, members = load_fleet(targets_file, settings.pipeline_home, fleet)
        with exclusive(settings, "serving", f"rollback of fleet {fleet} ({reason})"):
            return fleet_rollback(settings, group, members, str(inventory_path(targets_file)), version, reason)
    (chosen,) = pick_targets(load_targets(targets_file, settings.pipeline_home), [target])
    registry = MlflowRegistry(settings)
    cache = settings.pipeline_home / "registry-cache"
    bundles = settings.pipeline_home / "bundles"
    result = {"model": registry.name, "target": target, "reason": reason, "failing_version": failing_version}
    try:
        with exclusive(settings, "serving", f"rollback on {target} ({reason})"):
            return _rollback(logger, registry, chosen, version, failing_version, reason, result, cache, bundles)
    except Exception as exc:
        result |= {"action": "FAILED", "error": str(exc)}
        raise
    finally:
        publish("rollback-report", registry.name, rollback_report(result),
                f"{registry.name} on {target}: {result.get('action')}")


def _rollback(logger, registry: MlflowRegistry, chosen, version: str | None, failing_version: str | None,
              reason: str, result: dict, cache, bundles) -> dict:
    target = chosen.name
    champion = registry.alias_version(CHAMPION)
    now = str(champion.version) if champion is not None else None
    if failing_version and now != str(failing_version):
        result |= {"champion_before": now, "champion_after": now}
        failing = registry.get_version(failing_version)
        served = transport_for(chosen).host("status")
        if champion is None or not served.get("running") or \
                served.get("default_version") != failing.tags.get("export_version"):
            logger.warning("alarm about version %s, but the champion is %s and %s does not serve it: nothing "
                           "to do", failing_version, now or "none", target)
            result |= {"action": "skipped"}
            return result
        deployment = activate_on(chosen, registry.export_dir(champion, cache), bundles)
        logger.info("champion already back on %s; %s switched from version %s to it", now, target,
                    failing_version)
        result |= {"action": "aligned", "deployment": deployment.to_dict()}
        return result
    current, goal = registry.rollback_version(version, expected_champion=failing_version)
    deployment = activate_on(chosen, registry.export_dir(registry.get_version(goal), cache), bundles)
    result |= registry.record_rollback(current, goal, reason, flow_run.get_id())
    result |= {"action": "rolled back", "deployment": deployment.to_dict()}
    logger.info("rolled back %s on %s: champion %s -> %s", registry.name, target, current, goal)
    return result
