"""The hourly check of what was deployed (the ``monitor`` deployment).

For each target, ``tasks.monitoring.probe.check_target``: is the server up, does it serve the
registry's champion, and does that champion still answer as trained? A served champion that
fails the probe is a critical alarm — the rollback deployment answers it; a host that is down
or serves another version is a warning for a person.

Latency, volume, error-rate, drift (PSI) and calibration (ECE) checks belong here too; they
come with the monitoring work.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.notify import emit_alarm, publish
from tasks.constants import CHAMPION
from tasks.deploy.targets import load_targets, pick_targets
from tasks.monitoring.probe import check_target
from tasks.registry import MlflowRegistry
from tasks.settings import load_settings


@flow(name="monitor", validate_parameters=False)
def monitor_flow(targets: list[str] | None = None, targets_file: str | None = None,
                 config: str | None = None) -> dict:
    """Check every target against the registry's champion; emit alarms; publish the findings."""
    logger = get_run_logger()
    settings = load_settings(config)
    inventory = load_targets(targets_file, settings.pipeline_home)
    chosen = pick_targets(inventory, targets) if targets else list(inventory.values())
    registry = MlflowRegistry(settings)
    champion = registry.alias_version(CHAMPION)
    version = str(champion.version) if champion is not None else None
    metadata = registry.metadata_of(champion) if champion is not None else None
    findings = [check_target(t, version, metadata).to_dict() for t in chosen]
    for f in findings:
        if f["alarm"]:
            emit_alarm(f["alarm"], target=f["target"], model=registry.name, version=version, reason=f["finding"])
        else:
            logger.info("target %s: %s", f["target"], f["finding"])
    rows = [f"| {f['target']} | {f['served'] or '–'} | {f['alarm'] or 'none'} | {f['finding']} |" for f in findings]
    publish("monitor", registry.name,
            f"# Monitor: {registry.name}, champion {version or 'none'}\n\n"
            "| target | serves | alarm | finding |\n|---|---|---|---|\n" + "\n".join(rows) + "\n",
            f"{sum(1 for f in findings if f['alarm'])} alarm(s) over {len(findings)} target(s)")
    return {"model": registry.name, "champion": version, "findings": findings}
