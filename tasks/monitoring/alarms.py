"""Alarm state between monitor runs, and the channels each alarm goes to.

State per (target, version, rule) lives in ``$PIPELINE_HOME/monitoring/alarms.json``: a new alarm,
or one whose level changed, *fires* and is sent; one still firing at the same level is not sent
again; one no longer found *resolves* and the resolution is sent. Every transition is appended to
``alarm-history.jsonl`` beside it. Only targets that were checked resolve their alarms (a host the
monitor could not reach keeps its drift alarms as they were).

Routing, as the guide's "Alert Channels" says: critical → the on-call channel (PagerDuty Events
API v2) and Slack; warning → Slack; info → the dashboard only. A channel that fails is logged and
recorded in the history; it never stops the monitor.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from serving.contract import files
from tasks.monitoring.rules import CRITICAL, WARNING, Alarm

log = logging.getLogger(__name__)

FIRING, RESOLVED = "firing", "resolved"


@dataclass(frozen=True)
class Transition:
    key: str
    target: str
    model: str
    version: str
    state: str                  # firing | resolved
    alarm: dict                 # the Alarm (for a resolution: as it last fired)
    at: float

    @property
    def level(self) -> str:
        return self.alarm["level"]

    def summary(self) -> str:
        head = "RESOLVED" if self.state == RESOLVED else self.level.upper()
        return (f"[{head}] {self.model} v{self.version} on {self.target}: {self.alarm['message']} — "
                f"{self.alarm['action']}")


class AlarmBook:
    """The alarms firing now, persisted between runs."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "alarms.json"
        self.history = Path(directory) / "alarm-history.jsonl"
        self.firing: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    @classmethod
    @contextlib.contextmanager
    def locked(cls, directory: Path) -> Iterator[AlarmBook]:
        """The book, read and (by the caller's ``save``) written under an exclusive lock: the hourly
        monitor and the 30-second health check may run at the same moment."""
        with files.locked(Path(directory) / "alarms.lock"):
            yield cls(directory)

    def update(self, target: str, model: str, found: dict[str, list[Alarm]], now: float,
               scope: Callable[[str], bool] = lambda rule: True) -> list[Transition]:
        """``found``: the alarms of each version checked on ``target`` now; ``scope``: the rules this check
        judges (only those can resolve). Returns what changed."""
        changes = []
        current = {f"{target}|{version}|{a.rule}": (version, a) for version, alarms in found.items() for a in alarms}
        for key, (version, alarm) in current.items():
            before = self.firing.get(key)
            if before is None or before["alarm"]["level"] != alarm.level:
                self.firing[key] = {"target": target, "model": model, "version": version, "since": now,
                                    "alarm": alarm.to_dict()}
                changes.append(Transition(key, target, model, version, FIRING, alarm.to_dict(), now))
            else:
                before["alarm"] = alarm.to_dict()     # still firing: the latest value, not sent again
        for key in [k for k, v in self.firing.items()
                    if v["target"] == target and k not in current and scope(v["alarm"]["rule"])]:
            gone = self.firing.pop(key)
            # Never before it fired: a wall clock stepped back between the two would give a negative duration.
            at = max(now, gone.get("since", now))
            changes.append(Transition(key, target, gone["model"], gone["version"], RESOLVED, gone["alarm"], at))
        return changes

    def save_state(self) -> None:
        """Write the alarms firing now (atomically and durably: a crash must not lose a firing alarm, which
        would be sent again as new; under ``locked``)."""
        files.atomic_write(self.path, json.dumps(self.firing, indent=1, sort_keys=True))

    def log(self, transitions: list[Transition], deliveries: dict[str, list[str]]) -> None:
        """Append the changes and where each went to the history (once they were sent, outside the lock)."""
        self.history.parent.mkdir(parents=True, exist_ok=True)
        with self.history.open("a") as fh:
            for t in transitions:
                fh.write(json.dumps({**asdict(t), "sent_to": deliveries.get(t.key, [])}) + "\n")

    def save(self, transitions: list[Transition], deliveries: dict[str, list[str]]) -> None:
        self.save_state()
        self.log(transitions, deliveries)


# ---------------------------------------------------------------- channels

class Channel(Protocol):
    name: str

    def send(self, transition: Transition) -> None: ...


class SlackWebhook:
    """Slack's incoming webhook: ``{"text": …}``. The URL is a secret: it comes from the environment."""

    name = "slack"

    def __init__(self, url: str, timeout_s: float = 10) -> None:
        self.url, self.timeout_s = url, timeout_s

    def send(self, transition: Transition) -> None:
        import httpx

        httpx.post(self.url, json={"text": transition.summary()}, timeout=self.timeout_s).raise_for_status()


class PagerDutyEvents:
    """PagerDuty Events API v2: trigger on firing, resolve on resolution, one dedup key per alarm."""

    name = "pagerduty"

    def __init__(self, url: str, routing_key: str, timeout_s: float = 10) -> None:
        self.url, self.routing_key, self.timeout_s = url, routing_key, timeout_s

    def send(self, transition: Transition) -> None:
        import httpx

        body = {"routing_key": self.routing_key, "dedup_key": transition.key,
                "event_action": "resolve" if transition.state == RESOLVED else "trigger"}
        if transition.state != RESOLVED:
            body["payload"] = {"summary": transition.summary()[:1024], "source": transition.target,
                               "severity": "critical" if transition.level == CRITICAL else "warning",
                               "component": transition.model, "group": f"version {transition.version}",
                               "custom_details": transition.alarm}
        httpx.post(self.url, json=body, timeout=self.timeout_s).raise_for_status()


def route(transition: Transition) -> tuple[str, ...]:
    """Which channels hear of a transition: critical → on-call and Slack, warning → Slack."""
    return {CRITICAL: ("pagerduty", "slack"), WARNING: ("slack",)}.get(transition.level, ())


def deliver(transitions: list[Transition], channels: dict[str, Channel]) -> dict[str, list[str]]:
    """Send each transition to its channels; returns, per alarm key, where it went (or why not)."""
    sent: dict[str, list[str]] = {}
    for t in transitions:
        for name in route(t):
            channel = channels.get(name)
            if channel is None:
                sent.setdefault(t.key, []).append(f"{name}: not configured")
                continue
            try:
                channel.send(t)
                sent.setdefault(t.key, []).append(name)
            except Exception as exc:   # a channel that is down must not stop the monitor
                log.error("alarm %s: sending to %s failed: %s", t.key, name, exc)
                sent.setdefault(t.key, []).append(f"{name}: FAILED ({type(exc).__name__})")
    return sent
