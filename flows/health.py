"""The guide's health check: one round over every target's ``/health`` (``health_round``), run every
``health_interval_s`` (30 s) by the long-running watcher (``python -m flows watch``, ``flows.watcher``) and
every 6 hours by the ``health`` deployment (``health_flow``), which also watches the watcher.

A server down on every attempt raises the critical alarm ``liveness`` — paged, never a rollback — and a server
that answers healthy again resolves it; a target that never had a version is "not deployed" and pages nobody
(``tasks.monitoring.liveness``). The deployment raises ``health_watcher`` when the watcher's heartbeat is older
than three of its rounds. Alarm state and channels are the monitor's (``tasks.monitoring.alarms``, ``send``);
the watcher and the deployment share them, so an alarm one of them fired is not sent again by the other.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger

from flows.monitor import channels_from, send
from flows.outcomes import ends_in, health_outcome
from tasks.deploy.targets import Target, load_targets, pick_targets
from tasks.monitoring.alarms import AlarmBook, Transition, deliver
from tasks.monitoring.liveness import (
    NOT_DEPLOYED,
    SILENT_RULE,
    WATCHER,
    DeployedRecord,
    Liveness,
    check_liveness,
    in_scope,
    read_heartbeat,
    watcher_silence,
)
from tasks.monitoring.settings import MonitoringSettings, load_monitoring
from tasks.settings import load_settings

# What a round does about the watcher's own alarm: leave it, resolve it (the watcher is the one asking), or
# judge the heartbeat (the deployment).
Heartbeat = Literal["ignore", "alive", "judge"]


def _is_silent(rule: str) -> bool:
    return rule == SILENT_RULE


def _watcher_alarms(heartbeat: Heartbeat, directory: Path, checked: list[Liveness], cfg: MonitoringSettings,
                    now: float) -> dict | None:
    """The watcher's alarms for ``AlarmBook.update`` (None: not judged this round)."""
    if heartbeat == "ignore":
        return None
    if heartbeat == "alive":
        return {}
    deployed = any(c.status != NOT_DEPLOYED for c in checked)
    silent = watcher_silence(read_heartbeat(directory), now, cfg.health_interval_s, deployed)
    return {"none": [silent]} if silent else {}


def health_round(chosen: list[Target], home: Path, model: str, cfg: MonitoringSettings, env: dict[str, str], *,
                 events: bool, heartbeat: Heartbeat = "ignore") -> dict:
    """Ask every chosen target's /health once; fire or resolve ``liveness`` (and the watcher's alarm, as
    ``heartbeat`` says); send what changed to its channels (and as a Prefect event with ``events``).

    Returns the round's time, each target's ``Liveness.to_dict()`` and the transitions."""
    directory = home / "monitoring"
    record = DeployedRecord(directory)
    checked = [check_liveness(target, cfg, record) for target in chosen]     # retries: outside the lock
    record.save()
    now = time.time()
    watcher = _watcher_alarms(heartbeat, directory, checked, cfg, now)
    transitions: list[Transition] = []
    with AlarmBook.locked(directory) as book:
        for c in checked:
            transitions += book.update(c.target, model, {c.served or "none": [c.alarm]} if c.alarm else {}, now,
                                       scope=in_scope)
        if watcher is not None:
            transitions += book.update(WATCHER, model, watcher, now, scope=_is_silent)
        book.save_state()
    channels = channels_from(env, cfg.pagerduty_url)
    # Prefect events need a Prefect server: a flow run has one; the watcher only when PREFECT_API_URL names one.
    deliveries = send(transitions, channels, version=None) if events else deliver(transitions, channels)
    book.log(transitions, deliveries)
    return {"at": now, "targets": {c.target: c.to_dict() for c in checked},
            "transitions": [{**t.alarm, "target": t.target, "version": t.version, "state": t.state,
                             "sent_to": deliveries.get(t.key, [])} for t in transitions]}


def chosen_targets(targets_file: str | Path | None, home: Path, names: list[str] | None) -> list[Target]:
    """The targets a check asks: ``names`` of the inventory, else all of them."""
    inventory = load_targets(targets_file, home)
    return pick_targets(inventory, names) if names else list(inventory.values())


@flow(name="health", validate_parameters=False)
@ends_in(health_outcome)
def health_flow(targets: list[str] | None = None, targets_file: str | None = None, config: str | None = None,
                monitoring: str | None = None) -> dict:
    """Ask every target's /health once and check the watcher's heartbeat; fire or resolve their alarms."""
    logger = get_run_logger()
    settings = load_settings(config)
    cfg = load_monitoring(monitoring)
    chosen = chosen_targets(targets_file, settings.pipeline_home, targets)
    result = health_round(chosen, settings.pipeline_home, settings.model_name, cfg, dict(os.environ), events=True,
                          heartbeat="judge")
    for name, found in result["targets"].items():
        (logger.error if found["alarm"] else logger.info)("target %s: %s; %s", name, found["status"], found["detail"])
    for t in result["transitions"]:
        logger.warning("%s: %s %s on %s: %s", t["state"], t["level"], t["rule"], t["target"], t["message"])
    return result
