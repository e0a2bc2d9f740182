"""The guide's health check: is each target's server answering "healthy" — and has it ever had a version?

Cheaper than the hourly probe (no registry, no golden examples): one ``GET /health`` per target,
tried ``host_attempts`` times before it counts as down. Down is critical and pages a person (the
rule ``liveness``); it resolves as soon as the server answers healthy again.

A target that has never had a version is *not deployed*, not down: it pages nobody. What counts as
"has had a version" is the host's own state (a release unpacked under its ``releases/``, the deploy's
first step there, asked through the target's transport), remembered in
``$PIPELINE_HOME/monitoring/deployed.json`` together with every version a healthy ``/health`` named.
So the host is asked only while its server does not answer and the record does not know it yet: once a
version was seen, a server that stops answering pages at once, with no SSH to any host.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx

from serving.contract import files
from tasks.deploy.targets import Target, url_of
from tasks.deploy.transports import transport_for
from tasks.monitoring.rules import CRITICAL, Alarm
from tasks.monitoring.settings import MonitoringSettings
from tasks.retry import retry

RULE = "liveness"
SILENT_RULE = "health_watcher"      # the watcher's heartbeat is older than SILENT_AFTER rounds
WATCHER = "health-watcher"          # the target name that alarm is filed under
SILENT_AFTER = 3
NOT_DEPLOYED = "not deployed"
DEPLOYED_FILE = "deployed.json"
HEARTBEAT_FILE = "health-watcher.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def in_scope(rule: str) -> bool:
    """The rules the health check fires and resolves (the monitor leaves them alone)."""
    return rule in (RULE, SILENT_RULE)


def _ask_health(target: Target, timeout_s: float) -> tuple[dict, str | None]:
    """One ``GET /health``: (its body, what is wrong, None when healthy)."""
    try:
        resp = httpx.get(f"{url_of(target)}/health", timeout=timeout_s, headers={"X-Pipeline-Probe": "health"})
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {}, f"/health unreachable: {type(exc).__name__}: {exc}"
    if resp.status_code == 200 and body.get("status") == "healthy":
        return body, None
    return body, f"/health answered {resp.status_code} {body.get('status')}: {'; '.join(body.get('reasons', []))}"


def check_health(target: Target, cfg: MonitoringSettings, timeout_s: float = 5) -> tuple[dict, Alarm | None]:
    """(what ``/health`` said, the alarm when it was not healthy on every attempt)."""
    body, problem = retry(lambda: _ask_health(target, timeout_s), cfg.host_attempts, cfg.host_retry_wait_s,
                          done=lambda answer: answer[1] is None)
    if problem is None:
        return body, None
    return body, Alarm(RULE, CRITICAL, None, 0.0, f"{problem} ({cfg.host_attempts} attempt(s))",
                       "Immediate response: bring the server back (a rollback would not)")


class DeployedRecord:
    """``deployed.json``: each target known to have had a version, the last version seen there and how it was
    known (``health``: a healthy answer named it; ``host``: a release unpacked on the host)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / DEPLOYED_FILE
        self.targets: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._changed: dict[str, dict] = {}

    def knows(self, name: str) -> bool:
        return name in self.targets

    def version_of(self, name: str) -> str | None:
        return (self.targets.get(name) or {}).get("version")

    def note(self, name: str, version: str | None, source: str, now: float) -> None:
        """Remember that ``name`` has had a version (``version`` None: one of the host's, unnamed)."""
        before = self.targets.get(name)
        if before is not None and (version is None or before.get("version") == version):
            return
        entry = {"version": version or (before or {}).get("version"), "source": source, "since": now}
        self.targets[name] = self._changed[name] = entry

    def save(self) -> None:
        """Merge what this check learnt into the file (another check may have written it meanwhile)."""
        if not self._changed:
            return
        with files.locked(self.path.with_suffix(".lock")):
            on_disk = json.loads(self.path.read_text()) if self.path.exists() else {}
            files.atomic_write(self.path, json.dumps({**on_disk, **self._changed}, indent=1, sort_keys=True))
        self._changed = {}


def ever_deployed(state: dict) -> bool:
    """Whether a host's ``status`` (the host agent's answer) shows it has had a version: a server runs, or a
    release is unpacked under its ``releases/`` (the deploy's first step there)."""
    return bool(state.get("running") or state.get("releases"))


def host_releases(target: Target) -> tuple[list[str] | None, str]:
    """The versions unpacked on the target's host (None when the host could not be asked), and what it said."""
    try:
        state = transport_for(target).host("status")
    except Exception as exc:  # an unreachable host is an answer here, not a crash of the check
        return None, f"host unreachable: {exc}"
    releases = list(state.get("releases") or [])
    return releases, f"its host has release(s) {', '.join(releases)}" if releases else "its host has no release yet"


@dataclass(frozen=True)
class Liveness:
    """One target's answer: ``status`` is /health's (healthy, degraded, unhealthy), ``unreachable`` or
    ``not deployed``; ``served`` the version the alarm is about; ``alarm`` None when nobody is paged."""

    target: str
    status: str
    served: str | None
    alarm: Alarm | None
    detail: str

    def to_dict(self) -> dict:
        return {"status": self.status, "served": self.served, "alarm": self.alarm.message if self.alarm else None,
                "detail": self.detail}


def check_liveness(target: Target, cfg: MonitoringSettings, record: DeployedRecord,
                   now: float | None = None) -> Liveness:
    """Ask ``/health``; a target that does not answer healthy pages only when it has had a version (the record
    knows it, else its host has a release unpacked; a host that cannot be asked counts as deployed)."""
    now = time.time() if now is None else now
    body, alarm = check_health(target, cfg)
    status = body.get("status", "unreachable")
    served = body.get("default_version")
    if alarm is None:
        record.note(target.name, served, "health", now)
        return Liveness(target.name, status, served, None, "answers healthy")
    if not record.knows(target.name):
        releases, said = host_releases(target)
        if releases == []:
            return Liveness(target.name, NOT_DEPLOYED, None, None, said)
        if releases:
            record.note(target.name, releases[-1], "host", now)
        alarm = replace(alarm, message=f"{alarm.message}; {said}")
    return Liveness(target.name, status, served or record.version_of(target.name), alarm, alarm.message)


# ---------------------------------------------------------------- the watcher's heartbeat

def boot_clock() -> dict | None:
    """This boot's id and its clock since boot (``CLOCK_BOOTTIME``: no NTP step moves it); None off Linux."""
    try:
        return {"id": Path(BOOT_ID).read_text().strip(), "s": time.clock_gettime(time.CLOCK_BOOTTIME)}
    except (OSError, AttributeError):
        return None


def write_heartbeat(directory: Path, at: float, interval_s: float, rounds: int, targets: dict[str, dict],
                    pid: int, boot: dict | None = None) -> Path:
    """What the watcher's last round found (``health-watcher.json``): its time, its interval and each target;
    ``boot`` (``boot_clock()``): when, on the clock since boot, which a wall-clock step does not move."""
    path = Path(directory) / HEARTBEAT_FILE
    beat = {"at": at, "interval_s": interval_s, "rounds": rounds, "pid": pid, "targets": targets}
    if boot is not None:
        beat["boot"] = boot
    files.atomic_write(path, json.dumps(beat, indent=1, sort_keys=True), durable=False)
    return path


def heartbeat_age(heartbeat: dict, now: float) -> float:
    """Seconds since the heartbeat: on the clock since boot when it was written in this boot (a wall clock
    stepped an hour neither ages it nor makes it young), else by the wall clock."""
    boot, here = heartbeat.get("boot"), None
    if isinstance(boot, dict) and isinstance(boot.get("s"), int | float):
        here = boot_clock()
    if here is not None and here["id"] == boot.get("id"):
        return here["s"] - boot["s"]
    return now - heartbeat["at"]


def read_heartbeat(directory: Path) -> dict | None:
    """The watcher's last heartbeat, None when it never wrote one (or it cannot be read)."""
    try:
        beat = json.loads((Path(directory) / HEARTBEAT_FILE).read_text())
        return beat if isinstance(beat, dict) and isinstance(beat.get("at"), int | float) else None
    except (OSError, ValueError):
        return None


def watcher_silence(heartbeat: dict | None, now: float, interval_s: float, deployed: bool) -> Alarm | None:
    """The alarm when the watcher is silent: its heartbeat is older than ``SILENT_AFTER`` of its rounds, or it
    never wrote one while a target has a version (before the first deploy there is nothing to watch)."""
    action = "Start the watcher again: systemctl restart ml-pipeline-health-watcher (or python -m flows watch)"
    if heartbeat is None:
        if not deployed:
            return None
        return Alarm(SILENT_RULE, CRITICAL, None, 0.0, "health watcher silent: it never wrote a heartbeat "
                     f"({HEARTBEAT_FILE}) though a target has a version", action)
    every = float(heartbeat.get("interval_s") or interval_s)
    age, limit = heartbeat_age(heartbeat, now), SILENT_AFTER * every
    if age <= limit:
        return None
    last = datetime.fromtimestamp(heartbeat["at"], UTC).isoformat(timespec="seconds")
    return Alarm(SILENT_RULE, CRITICAL, round(age, 1), limit, f"health watcher silent for {age:.0f} s (its last "
                 f"round at {last}; it checks every {every:g} s)", action)
