"""Named final states: the Prefect runs list tells an approved promotion from a rejected one, a
release that shipped from one the gate refused, without opening a log.

A flow decorated with ``@ends_in(name_of)`` (under ``@flow``) still returns its summary, and still raises
its errors to a caller that runs it directly (the CLI, a parent flow); only the state Prefect records is
named. A summary ends the run in ``Completed(name=…)``, its one-line message saying what happened; a
``ReleaseError`` ends it in ``Failed(name=…)``, named by the error's class (``STATE_NAMES``), its message
the error's first line.

The runs list and a run's page show the name on the state's badge. Find runs by it with
``prefect flow-run ls --state Rejected`` or the API's ``flow_runs.state.name.any_``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from prefect.states import Completed, Failed, State

from tasks import errors

# name → (type, meaning); the type is Prefect's, the colour the UI gives the badge.
OUTCOMES: dict[str, tuple[str, str]] = {
    "Released": ("COMPLETED", "release or recalibration: the new version passed the gate, was deployed, "
                              "smoke-tested and promoted to champion"),
    "Blessed": ("COMPLETED", "release or recalibration: the new version passed the gate and is the challenger; "
                             "nothing was deployed (no targets given)"),
    "GatedOut": ("COMPLETED", "release or recalibration: the new version is registered with blessed=false; the "
                              "gate's reasons are in the state message; nothing was deployed"),
    "Promoted": ("COMPLETED", "deploy: the version serves on every target and is the champion"),
    "Approved": ("COMPLETED", "promote: approved in the form, then deployed, smoke-tested and promoted"),
    "Rejected": ("COMPLETED", "promote: rejected in the form; nothing changed"),
    "RolledBack": ("COMPLETED", "rollback: the champion alias moved back and the target serves it"),
    "Aligned": ("COMPLETED", "rollback: the alias was already back (another alarm got there first); this "
                             "target was switched to the champion"),
    "NothingToDo": ("COMPLETED", "rollback: the alarmed version is no longer champion nor served there"),
    "AllClear": ("COMPLETED", "monitor: no alarm fires"),
    "Alarming": ("COMPLETED", "monitor: at least one alarm fires (the message counts them)"),
    "Healthy": ("COMPLETED", "health: every deployed target answered healthy (the message counts those not "
                             "deployed yet)"),
    "Down": ("COMPLETED", "health: a deployed target did not answer healthy on every attempt (paged)"),
    "Scored": ("COMPLETED", "score: the version scored the input; no drift threshold crossed"),
    "ScoredWithDrift": ("COMPLETED", "score: the version scored the input, and the batch's drift crossed a "
                                     "monitoring threshold (the message names it)"),
    "TimedOut": ("FAILED", "promote: no answer within approval_timeout_s; nothing changed"),
    "StaleApproval": ("FAILED", "promote: approved, but the champion moved while the run waited; nothing "
                                "changed, start a new promotion"),
    "FleetHalted": ("FAILED", "a fleet release or rollback stopped; the hosts done were put back"),
    "SmokeTestFailed": ("FAILED", "the served model is not the trained one; the host was put back"),
    "RestoreFailed": ("FAILED", "a deploy failed AND a host could not be put back: check it by hand"),
    "PromotedButUnhealthy": ("FAILED", "promoted, then a target failed the check after promotion (the "
                                       "critical alarm asks for a rollback)"),
    "BadInput": ("FAILED", "the data, schema, feature list or configuration is wrong (the message names it)"),
    "TransferFailed": ("FAILED", "a bundle did not reach a host, or the host refused it"),
    "LockTimeout": ("FAILED", "another run of the same model held what this one needs for too long"),
    "RegistryFailed": ("FAILED", "MLflow refused or did not answer"),
    "IntegrityFailed": ("FAILED", "a fetched artifact did not match its recorded SHA-256"),
    "TrainingFailed": ("FAILED", "the model could not be fitted or exported faithfully"),
    "BalancerFailed": ("FAILED", "nginx refused the generated configuration or did not take it up"),
}

# The state a run that raised one of these ends in; the most specific class wins (the MRO is walked).
STATE_NAMES: dict[type, str] = {
    errors.ApprovalTimedOut: "TimedOut",
    errors.StaleApproval: "StaleApproval",
    errors.FleetHalted: "FleetHalted",
    errors.SmokeTestFailed: "SmokeTestFailed",
    errors.RestoreFailed: "RestoreFailed",
    errors.PostPromotionCheckFailed: "PromotedButUnhealthy",
    errors.ConfigError: "BadInput",
    errors.DataValidationError: "BadInput",
    errors.TransferError: "TransferFailed",
    errors.LockTimeout: "LockTimeout",
    errors.RegistryError: "RegistryFailed",
    errors.ArtifactIntegrityError: "IntegrityFailed",
    errors.TrainingError: "TrainingFailed",
    errors.BalancerError: "BalancerFailed",
}


def version_outcome(summary: dict) -> tuple[str, str]:
    """A release's or a recalibration's state: Released, Blessed or GatedOut."""
    version, gate = summary["registry"]["version"], summary["gate"]
    if not gate["passed"]:
        return "GatedOut", f"v{version} refused by the gate: " + "; ".join(gate["reasons"])
    if summary.get("deploy"):
        return "Released", f"v{version} passed the gate, was deployed and is the champion"
    return "Blessed", f"v{version} passed the gate and is the challenger (not deployed)"


def deploy_outcome(result: dict) -> tuple[str, str]:
    hosts = ", ".join(d.get("target", "?") for d in result.get("deployments", []))
    return "Promoted", f"v{result['registry_version']} serves on {hosts} and is the champion"


def promote_outcome(result: dict) -> tuple[str, str]:
    said = f"v{result['version']} by {result['approver']}: {result['reason']}"
    if result["decision"] == "rejected":
        return "Rejected", f"rejected {said}; nothing changed"
    before = (result["comparison"].get("champion") or {}).get("version") or "none"
    return "Approved", f"approved {said}; champion {before} -> {result['version']}"


def rollback_outcome(result: dict) -> tuple[str, str]:
    where = result.get("target") or f"fleet {result.get('fleet')}"
    moved = f"champion {result.get('champion_before') or 'none'} -> {result.get('champion_after') or 'none'}"
    return {"rolled back": ("RolledBack", f"{moved} on {where}: {result.get('reason')}"),
            "aligned": ("Aligned", f"{where} switched to champion {result.get('champion_after')}"),
            "skipped": ("NothingToDo", f"version {result.get('failing_version')} is neither champion nor "
                                       f"served on {where}")}[result["action"]]


def monitor_outcome(summary: dict) -> tuple[str, str]:
    firing = summary["firing"]
    if not firing:
        return "AllClear", f"no alarm over {len(summary['targets'])} target(s)"
    return "Alarming", f"{len(firing)} alarm(s) firing: " + ", ".join(map(str, firing[:5]))


def health_outcome(result: dict) -> tuple[str, str]:
    found = result["targets"]
    down = [name for name, f in found.items() if f["alarm"]]
    if down:
        return "Down", f"{', '.join(down)} down: " + "; ".join(found[n]["alarm"] for n in down)
    counts: dict[str, int] = {}
    for f in found.values():
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    return "Healthy", ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no target"


def state_name(exc: BaseException) -> str:
    """The named state a run that raised ``exc`` ends in (``Failed`` when none is more specific)."""
    for cls in type(exc).__mro__:
        if cls in STATE_NAMES:
            return STATE_NAMES[cls]
    return "Failed"


def first_line(text: str, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def ends_in(name_of: Callable[[dict], tuple[str, str]]):
    """Decorate a flow function (below ``@flow``): its summary ends the run in the state
    ``Completed(name, message)`` that ``name_of(summary)`` gives; a ``ReleaseError`` in a named ``Failed``."""
    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs) -> State:
            try:
                summary = fn(*args, **kwargs)
            except errors.ReleaseError as exc:
                return Failed(name=state_name(exc), message=first_line(exc), data=exc)
            name, message = name_of(summary)
            return Completed(name=name, message=first_line(message), data=summary)
        return run
    return decorate
