"""Probe one target against the registry's champion.

Is the server up, does it serve the champion, and does that champion still answer as trained
(the smoke test's checks: health, file hashes, golden predictions, a malformed request
refused)? A served champion that fails the probe is critical and another version (a rollback)
fixes it. A host that is down is critical too, but pages a person: no model version brings a
server back. A host that serves another version is a warning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from serving.contract.metadata import ModelMetadata
from tasks.constants import ALARM_CRITICAL, ALARM_PAGE, ALARM_WARNING
from tasks.deploy.smoke import smoke_test
from tasks.deploy.targets import Target, url_of
from tasks.deploy.transports import transport_for
from tasks.monitoring.liveness import ever_deployed


@dataclass(frozen=True)
class Finding:
    target: str
    alarm: str | None          # None, ALARM_WARNING, ALARM_PAGE (down) or ALARM_CRITICAL (rollback)
    finding: str
    served: str | None         # the export version the host serves by default

    def to_dict(self) -> dict:
        return asdict(self)


def check_target(target: Target, champion_version: str | None, metadata: ModelMetadata | None) -> Finding:
    """One target's checks against the champion (``metadata`` None: the registry has no champion)."""
    expected = metadata.version if metadata is not None else None
    try:
        state = transport_for(target).host("status")
    except Exception as exc:  # an unreachable host is a finding, not a crash of the monitor
        return Finding(target.name, ALARM_PAGE, f"host unreachable: {exc}", None)
    served = state.get("default_version")
    if not ever_deployed(state):   # never had a version: nothing is down
        return Finding(target.name, None, "not deployed (no release on the host yet)", None)
    if not state.get("running"):
        return Finding(target.name, ALARM_PAGE, "no server running", None)
    if expected is None:
        return Finding(target.name, None, "no champion in the registry", served)
    if served != expected:
        return Finding(target.name, ALARM_WARNING, f"serves export version {served}, the champion (registry "
                       f"version {champion_version}) is export version {expected}", served)
    probe = smoke_test(target.name, url_of(target), metadata)
    if not probe.passed:
        return Finding(target.name, ALARM_CRITICAL, "champion fails its probe: " + "; ".join(probe.failures), served)
    return Finding(target.name, None, f"ok (golden max |Δp| {probe.golden_max_abs_diff:.1e}, p50 "
                   f"{probe.latency_ms_p50} ms)", served)
