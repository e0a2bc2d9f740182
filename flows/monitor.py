"""The hourly check of what was deployed (the ``monitor`` deployment).

For each target: is the server up, does it serve the registry's champion, and does that
champion still answer as trained (the smoke test's probe: health, file hashes, golden
predictions ≤ 1e-6, a malformed request refused)? A served champion that fails the probe is
a critical alarm — the rollback deployment answers it; a host that is down or serves another
version is a warning for a person, since another model version would not fix it.

Latency, volume, error-rate, drift (PSI) and calibration (ECE) checks belong here too; they
come with the monitoring work.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.alarms import CRITICAL, WARNING, emit_alarm
from tasks.deploy import url_of
from tasks.registry import CHAMPION, MlflowRegistry
from tasks.reports import publish
from tasks.settings import load_settings
from tasks.smoke import smoke_test
from tasks.targets import load_targets, pick_targets, transport_for


def check_target(target, champion_version: str | None, metadata) -> dict:
    """One target's checks; ``alarm`` is None, WARNING or CRITICAL."""
    expected = metadata.version if metadata is not None else None
    try:
        state = transport_for(target).host("status")
    except Exception as exc:  # an unreachable host is a finding, not a crash of the monitor
        return {"target": target.name, "alarm": WARNING, "finding": f"host unreachable: {exc}", "served": None}
    served = state.get("default_version")
    if not state.get("running"):
        return {"target": target.name, "alarm": WARNING, "finding": "no server running", "served": None}
    if expected is None:
        return {"target": target.name, "alarm": None, "finding": "no champion in the registry", "served": served}
    if served != expected:
        return {"target": target.name, "alarm": WARNING, "served": served,
                "finding": f"serves export version {served}, the champion (registry version {champion_version}) "
                           f"is export version {expected}"}
    probe = smoke_test(target.name, url_of(target), metadata)
    if not probe.passed:
        return {"target": target.name, "alarm": CRITICAL, "served": served,
                "finding": "champion fails its probe: " + "; ".join(probe.failures)}
    return {"target": target.name, "alarm": None, "served": served,
            "finding": f"ok (golden max |Δp| {probe.golden_max_abs_diff:.1e}, p50 {probe.latency_ms_p50} ms)"}


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
    findings = [check_target(t, version, metadata) for t in chosen]
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
