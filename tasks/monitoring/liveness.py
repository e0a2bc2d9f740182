"""The guide's 30-second health check: is each target's server answering "healthy"?

Cheaper than the hourly probe (no registry, no golden examples): one ``GET /health`` per target,
tried ``host_attempts`` times before it counts as down. Down is critical and pages a person (the
rule ``liveness``); it resolves as soon as the server answers healthy again.
"""

from __future__ import annotations

import httpx

from tasks.deploy.targets import Target, url_of
from tasks.monitoring.rules import CRITICAL, Alarm
from tasks.monitoring.settings import MonitoringSettings
from tasks.retry import retry

RULE = "liveness"


def in_scope(rule: str) -> bool:
    return rule == RULE


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
