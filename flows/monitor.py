"""The monitor (the hourly ``monitor`` deployment, and ``python -m flows monitor``).

For each target (``tasks.monitoring.watch``): probe the server against the registry's champion,
read what it recorded over the lookback, and judge every row of the guide's checklist — drift
(PSI), the prediction distribution, calibration and ROC-AUC from labels, errors, latency, volume
— against ``configs/monitoring.yaml``. Alarms keep their state between runs
(``tasks.monitoring.alarms``): a new one fires once, a resolved one says so; each firing or
resolution goes to its channels (critical: PagerDuty and Slack; warning: Slack) and is a Prefect
event. Only a champion failing its golden check emits ``pipeline.alarm.critical``, the event the
rollback deployment answers.
"""

from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger

from flows.models import settings_for
from flows.notify import emit_alarm, publish
from flows.outcomes import ends_in, monitor_outcome
from tasks.constants import ALARM_CRITICAL, ALARM_PAGE, ALARM_RESOLVED, ALARM_WARNING, CHAMPION
from tasks.deploy.targets import load_targets, pick_targets
from tasks.monitoring.alarms import FIRING, AlarmBook, PagerDutyEvents, SlackWebhook, Transition, deliver
from tasks.monitoring.liveness import in_scope
from tasks.monitoring.rules import CRITICAL
from tasks.monitoring.settings import load_monitoring
from tasks.monitoring.watch import watch_target
from tasks.registry import MlflowRegistry
from tasks.release.reports import monitor_report


def _event(t: Transition) -> str:
    if t.state != FIRING:
        return ALARM_RESOLVED
    if t.alarm["level"] == CRITICAL:
        return ALARM_CRITICAL if t.alarm["rollback"] else ALARM_PAGE
    return ALARM_WARNING


def channels_from(env: dict[str, str], pagerduty_url: str) -> dict:
    """The alarm channels the environment configures (webhook URLs and routing keys are secrets)."""
    channels = {}
    if env.get("PIPELINE_SLACK_WEBHOOK_URL"):
        channels["slack"] = SlackWebhook(env["PIPELINE_SLACK_WEBHOOK_URL"])
    if env.get("PIPELINE_PAGERDUTY_ROUTING_KEY"):
        channels["pagerduty"] = PagerDutyEvents(env.get("PIPELINE_PAGERDUTY_URL") or pagerduty_url,
                                                env["PIPELINE_PAGERDUTY_ROUTING_KEY"])
    return channels


def send(transitions: list[Transition], channels: dict, version: str | None) -> dict[str, list[str]]:
    """Deliver each change to its channels and emit it as a Prefect event; returns where each went."""
    deliveries = deliver(transitions, channels)
    for t in transitions:
        emit_alarm(_event(t), target=t.target, model=t.model, version=version or t.version, reason=t.alarm["message"],
                   details={"rule": t.alarm["rule"], "level": t.alarm["level"], "state": t.state,
                            "served_version": t.version, "action": t.alarm["action"]})
    return deliveries


@flow(name="monitor", validate_parameters=False)
@ends_in(monitor_outcome)
def monitor_flow(targets: list[str] | None = None, targets_file: str | None = None, config: str | None = None,
                 monitoring: str | None = None, now: float | None = None, model: str | None = None) -> dict:
    """Check every target against the champion and the guide's thresholds; send the alarms that changed.

    ``now`` (epoch seconds) judges the traffic up to that moment (tests pass time in, never sleep). ``model``:
    the registered model's name instead of the config's ``model_name``."""
    logger = get_run_logger()
    settings = settings_for(config, model)
    cfg = load_monitoring(monitoring)
    judge_at, now = now, time.time() if now is None else now    # None: each target is judged on its server's clock
    inventory = load_targets(targets_file, settings.pipeline_home)
    chosen = pick_targets(inventory, targets) if targets else list(inventory.values())
    registry = MlflowRegistry(settings)
    champion = registry.alias_version(CHAMPION)
    version = str(champion.version) if champion is not None else None
    metadata = registry.metadata_of(champion) if champion is not None else None
    previous = champion.tags.get("previous_champion") if champion is not None else None
    previous_export = registry.get_version(previous).tags.get("export_version") if previous else None
    watched_targets = [watch_target(target, version, metadata, cfg, judge_at, previous_export) for target in chosen]
    results, transitions = [], []
    with AlarmBook.locked(settings.pipeline_home / "monitoring") as book:
        for watched in watched_targets:
            transitions += book.update(watched["target"], registry.name, watched["alarms"], now,
                                       scope=lambda rule: not in_scope(rule))
            found = {v: [a.to_dict() for a in alarms] for v, alarms in watched["alarms"].items()}
            results.append({**watched, "alarms": found})
            logger.info("target %s: %s; %d alarm(s)", watched["target"], watched["finding"]["finding"],
                        sum(len(a) for a in watched["alarms"].values()))
        book.save_state()
    # Sent outside the lock: a slow webhook must not hold up the 30-second health check.
    deliveries = send(transitions, channels_from(dict(os.environ), cfg.pagerduty_url), version)
    book.log(transitions, deliveries)
    summary = {"model": registry.name, "champion": version, "checked_at": now,
               "findings": [r["finding"] for r in results], "targets": results,
               "transitions": [{**t.alarm, "target": t.target, "version": t.version, "state": t.state,
                                "event": _event(t), "sent_to": deliveries.get(t.key, [])} for t in transitions],
               "firing": sorted(book.firing)}
    publish("monitor", registry.name, monitor_report(summary),
            f"{len(book.firing)} alarm(s) firing over {len(results)} target(s); {len(transitions)} change(s)")
    return summary
