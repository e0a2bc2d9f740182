"""One monitor pass over one target: probe it, read what its server recorded, judge it.

    probe     is the server up, serving the champion as trained? (``probe.check_target``, with
              retries before a host is called down)
    window    ``GET /monitoring/window`` for the lookback, and the day before it for the volume
              baseline and the ECE trend; counts only (``serving.monitoring.recorder``)
    judge     ``assess.assess`` then ``rules.evaluate`` per served version

The probe's finding becomes an alarm too: a champion failing its golden check is the one
critical alarm a rollback fixes; a server that is down or unreachable is critical but pages a
person; a host serving another version than the champion is a warning.
"""

from __future__ import annotations

from dataclasses import replace
from email.utils import parsedate_to_datetime

import httpx

from serving.contract.drift import label_metrics
from serving.contract.metadata import ModelMetadata
from tasks.constants import ALARM_CRITICAL, ALARM_PAGE, ALARM_WARNING
from tasks.deploy.targets import Target, url_of
from tasks.monitoring.assess import assess, error_rates
from tasks.monitoring.probe import Finding, check_target
from tasks.monitoring.rules import CRITICAL, WARNING, Alarm, evaluate
from tasks.monitoring.settings import MonitoringSettings
from tasks.retry import retry

DAY = 24 * 3600
PROBE_ALARMS = {
    ALARM_CRITICAL: ("probe", CRITICAL, "Roll back: the served champion is not the model that was trained", True),
    ALARM_PAGE: ("health", CRITICAL, "Immediate response: bring the server back (a rollback would not)", False),
    ALARM_WARNING: ("served_version", WARNING, "Deploy the champion to this target, or roll the registry back", False),
}


def probe_alarm(finding: Finding) -> Alarm | None:
    if finding.alarm is None:
        return None
    rule, level, action, rollback = PROBE_ALARMS[finding.alarm]
    return Alarm(rule, level, None, 0.0, finding.finding, action, rollback)


def server_clock(target: Target, timeout_s: float = 30) -> float:
    """The target's server's wall clock (the ``Date`` header of its /health answer, to the second).

    The windows are the server's, keyed by its clock: a monitor that reads them by its own clock reads the
    wrong hour when that clock is stepped (NTP, ±1 h) or drifts from the host's, and alarms resolve and fire
    again though nothing changed on the host."""
    with httpx.Client(base_url=url_of(target), timeout=timeout_s, headers={"X-Pipeline-Probe": "monitor"}) as http:
        resp = http.get("/health")
    try:
        return parsedate_to_datetime(resp.headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"no usable Date header in /health's answer ({exc})") from exc


def fetch_window(target: Target, since: float, until: float, timeout_s: float = 30) -> dict:
    """What the target's server recorded in [since, until) (probe-marked, so it counts as no traffic)."""
    with httpx.Client(base_url=url_of(target), timeout=timeout_s, headers={"X-Pipeline-Probe": "monitor"}) as http:
        resp = http.get("/monitoring/window", params={"since": since, "until": until})
        resp.raise_for_status()
        return resp.json()


def previous_rate(earlier: dict, until: float) -> float | None:
    """Requests per minute before the lookback, over the span the server has counted (at most a day)."""
    series = earlier.get("series") or []
    if not series:
        return None
    minutes = (until - min(w["start"] for w in series)) / 60
    return earlier.get("requests", 0) / minutes if minutes > 0 else None


SERVING_RULES = {"latency_p95": "p95_ms", "latency_p99": "p99_ms", "error_rate": "error_rate",
                 "server_errors": "rate_5xx"}


def began_with(alarm: Alarm, before: dict | None, min_requests: int) -> str | None:
    """Why a critical latency or error alarm is the new version's doing: the version served before it,
    on the same host within the last day, had traffic and stayed under the same threshold. None when
    that cannot be shown (then a rollback is not assumed to help)."""
    key = SERVING_RULES.get(alarm.rule)
    if key is None or alarm.level != CRITICAL or not before or before.get("requests", 0) < min_requests:
        return None
    value = {**before, **error_rates(before)}.get(key)
    if value is None or value > alarm.threshold:
        return None
    return f"{key} was {value:.4g} on the version served before (threshold {alarm.threshold:g})"


def _rollback_alarms(found: list[Alarm], version: str, prior: dict | None, min_requests: int) -> list[Alarm]:
    """The champion's critical latency or error alarms that the version before it did not show on this host
    become rollback alarms (``began_with`` says why)."""
    return [replace(alarm, rollback=True, action=f"Roll back: it began with version {version}",
                    message=f"{alarm.message}; {why}")
            if (why := began_with(alarm, prior, min_requests)) else alarm for alarm in found]


def _judge(window: dict, before: dict, metadata: ModelMetadata | None, cfg: MonitoringSettings, now: float,
           previous_export: str | None) -> tuple[dict, dict[str, list[Alarm]]]:
    """The assessment and the alarms per served version, from the lookback's window and the day before it."""
    lookback = cfg.lookback_minutes * 60
    known = {metadata.version: metadata} if metadata is not None else {}
    assessment = assess(window, known, cfg.lookback_minutes, cfg.min_rows_for_drift)
    earlier_versions = before.get("versions") or {}
    alarms: dict[str, list[Alarm]] = {}
    for version, a in assessment.items():
        earlier = earlier_versions.get(version, {})
        a["labels_per_hour_24h"] = [{"start": h["start"], **label_metrics([h])} for h in earlier.get("labels") or []] \
            + a["labels_per_hour"]
        found = evaluate(a, cfg, now, window["window_seconds"], previous_rate(earlier, now - lookback))
        if metadata is not None and version == metadata.version and previous_export:
            found = _rollback_alarms(found, version, earlier_versions.get(previous_export), cfg.volume.min_requests)
        if found:
            alarms[version] = found
    return assessment, alarms


def watch_target(target: Target, champion_version: str | None, metadata: ModelMetadata | None,
                 cfg: MonitoringSettings, now: float | None = None, previous_export: str | None = None) -> dict:
    """Probe, read and judge one target. Returns the finding, the assessment per served version and
    the alarms per served version (the probe's under the champion's export version).

    ``previous_export``: the export version of the champion before this one; a critical latency or
    error alarm on the champion that it did not show on this host becomes a rollback alarm. ``now`` (tests:
    the epoch seconds to judge at) None: the server's clock (``server_clock``), never this machine's."""
    # a host is called down only after every attempt failed
    finding = retry(lambda: check_target(target, champion_version, metadata), cfg.host_attempts,
                    cfg.host_retry_wait_s, done=lambda found: found.alarm != ALARM_PAGE)
    alarms: dict[str, list[Alarm]] = {}
    out = {"target": target.name, "finding": finding.to_dict(), "assessment": {}, "alarms": alarms}
    first = probe_alarm(finding)
    if first is not None:
        alarms.setdefault(finding.served or (metadata.version if metadata else "none"), []).append(first)
    if finding.served is None:          # no server: nothing recorded to read
        return out
    lookback = cfg.lookback_minutes * 60
    try:
        now = server_clock(target) if now is None else now
        window = fetch_window(target, now - lookback, now)
        before = fetch_window(target, now - DAY, now - lookback)    # the volume baseline, the ECE trend
    except (httpx.HTTPError, ValueError) as exc:
        out["window_error"] = f"{url_of(target)}/monitoring/window: {type(exc).__name__}: {exc}"
        return out
    out["assessment"], judged = _judge(window, before, metadata, cfg, now, previous_export)
    for version, found in judged.items():
        alarms.setdefault(version, []).extend(found)
    return out
