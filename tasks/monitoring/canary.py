"""The monitor's verdict on a canary: the same pass as the monitor flow (``watch.watch_target``: the
probe against the candidate as trained, then the guide's rules on what the host recorded), run on the
canary hosts every ``check_every_s`` until ``window_s`` is over; the first check that finds an alarm of
the halting level on the new version ends the window early.

Alarms on a version the canary served before the release are not the release's doing and do not count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from serving.contract.metadata import ModelMetadata
from tasks.deploy.targets import Target
from tasks.monitoring.rules import CRITICAL, WARNING, Alarm
from tasks.monitoring.settings import MonitoringSettings
from tasks.monitoring.watch import watch_target

LEVELS = {WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Verdict:
    halt: bool
    reasons: list[str]                       # what halted it, or what was seen below the halting level
    checks: int = 0                          # how many times the monitor looked
    seconds: float = 0.0                     # how long the canary was watched
    findings: list[str] = field(default_factory=list)   # the probe's word on each canary host, last check

    def to_dict(self) -> dict:
        return asdict(self)


def canary_verdict(alarms: dict[str, list[Alarm]], version: str, halt_on: str) -> Verdict:
    """Halt when an alarm of ``halt_on`` level or above fires on the new ``version``."""
    found = alarms.get(version, [])
    stop = [a for a in found if LEVELS.get(a.level, 0) >= LEVELS[halt_on]]
    if stop:
        return Verdict(True, [f"{a.level} {a.rule}: {a.message}" for a in stop])
    return Verdict(False, [f"{a.level} {a.rule}: {a.message} (below {halt_on})" for a in found])


def window_settings(cfg: MonitoringSettings, window_s: float) -> MonitoringSettings:
    """The monitoring thresholds with a lookback that covers the canary's window (whole minutes)."""
    return cfg.model_copy(update={"lookback_minutes": max(1, math.ceil(window_s / 60))})


def watch_canary(targets: list[Target], registry_version: str, metadata: ModelMetadata, cfg: MonitoringSettings,
                 window_s: float, check_every_s: float, halt_on: str, previous_export: str | None = None,
                 watch: Callable[..., dict] = watch_target, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], None] = time.sleep) -> Verdict:
    """Watch the canary hosts (serving ``metadata.version``) for ``window_s``; a verdict per host and check,
    the first halting one ends it.

    ``watch`` is the monitor's pass over one host (a fake in unit tests); ``clock`` and ``wait`` let tests
    run the window without waiting."""
    cfg = window_settings(cfg, window_s)
    start = clock()
    checks, seen, findings = 0, [], []
    while True:
        checks += 1
        findings = []
        for target in targets:     # now=None: each target judged on its server's clock
            watched = watch(target, registry_version, metadata, cfg, None, previous_export)
            findings.append(f"{target.name}: {watched['finding']['finding']}")
            verdict = canary_verdict(watched["alarms"], metadata.version, halt_on)
            if verdict.halt:
                return Verdict(True, [f"{target.name}: {r}" for r in verdict.reasons], checks,
                               round(clock() - start, 3), findings)
            seen += [f"{target.name}: {r}" for r in verdict.reasons if f"{target.name}: {r}" not in seen]
        left = start + window_s - clock()
        if left <= 0:
            return Verdict(False, seen, checks, round(clock() - start, 3), findings)
        wait(min(check_every_s, left))
