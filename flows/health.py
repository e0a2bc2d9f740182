"""The 30-second health check (the ``health`` deployment, an interval schedule of 30 s).

Each run asks every target's ``/health`` (``tasks.monitoring.liveness``); a server down on every
attempt raises the critical alarm ``liveness`` — paged, never a rollback — and a server that answers
healthy again resolves it. Alarm state and channels are the monitor's (``tasks.monitoring.alarms``);
this check only fires and resolves its own rule.
"""

from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger

from flows.monitor import channels_from, send
from tasks.deploy.targets import load_targets, pick_targets
from tasks.monitoring.alarms import AlarmBook
from tasks.monitoring.liveness import check_health, in_scope
from tasks.settings import load_monitoring, load_settings


@flow(name="health", validate_parameters=False)
def health_flow(targets: list[str] | None = None, targets_file: str | None = None, config: str | None = None,
                monitoring: str | None = None) -> dict:
    """Ask every target's /health; fire or resolve the ``liveness`` alarm."""
    logger = get_run_logger()
    settings = load_settings(config)
    cfg = load_monitoring(monitoring)
    inventory = load_targets(targets_file, settings.pipeline_home)
    chosen = pick_targets(inventory, targets) if targets else list(inventory.values())
    now = time.time()
    results = {}
    checked = [(target, *check_health(target, cfg)) for target in chosen]     # retries: outside the lock
    transitions = []
    with AlarmBook.locked(settings.pipeline_home / "monitoring") as book:
        for target, body, alarm in checked:
            results[target.name] = {"status": body.get("status", "unreachable"),
                                    "alarm": alarm.message if alarm else None}
            served = body.get("default_version") or "none"
            transitions += book.update(target.name, settings.model_name, {served: [alarm]} if alarm else {}, now,
                                       scope=in_scope)
            if alarm:
                logger.error("target %s: %s", target.name, alarm.message)
        book.save_state()
    deliveries = send(transitions, channels_from(dict(os.environ), cfg.pagerduty_url), version=None)
    book.log(transitions, deliveries)
    return {"targets": results, "transitions": [{**t.alarm, "target": t.target, "state": t.state} for t in transitions]}
