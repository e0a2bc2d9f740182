"""``python -m flows watch``: the health watcher, one long-running process instead of a flow run every 30 s.

Every ``health_interval_s`` (configs/monitoring.yaml, 30 s) it runs ``flows.health.health_round`` over the
targets — the same check, alarm book and channels as the ``health`` deployment — and writes its heartbeat,
``$PIPELINE_HOME/monitoring/health-watcher.json`` (the round's time and each target's state), which the
deployment reads every 6 hours to raise ``health_watcher`` when the watcher fell silent. It prints one line at
start, one per change (a target's state, an alarm fired or resolved) and one when it stops: quiet for days on
end while nothing changes. SIGTERM or SIGINT ends it after the round under way (systemd's stop, Ctrl-C);
``--rounds`` and ``--for-s`` bound it (tests, a one-off check). The ``ml-pipeline-health-watcher`` systemd unit
(deployments/systemd/) keeps it running.

Prefect events go out only when ``PREFECT_API_URL`` names a Prefect server: without one, Prefect would start
a temporary server inside the watcher for every alarm. The channels (PagerDuty, Slack) and the alarm history
do not depend on it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from flows.health import health_round
from tasks.deploy.targets import Target
from tasks.monitoring.liveness import boot_clock, write_heartbeat
from tasks.monitoring.settings import MonitoringSettings


def _say(line: str) -> None:
    print(line, flush=True)      # a line per change reaches the journal at once


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def changes(before: dict[str, str], result: dict) -> list[str]:
    """One line per target whose state changed since the last round, and per alarm fired or resolved;
    ``before`` (each target's last state) is brought up to date."""
    stamp, lines = _stamp(result["at"]), []
    for name, found in result["targets"].items():
        if before.get(name) != found["status"]:
            served = f" (serves {found['served']})" if found["served"] and found["status"] == "healthy" else ""
            why = "" if found["status"] == "healthy" else f": {found['detail']}"
            lines.append(f"{stamp} target {name}: {found['status']}{served}{why}")
            before[name] = found["status"]
    for t in result["transitions"]:
        lines.append(f"{stamp} alarm {t['rule']} {t['state']} on {t['target']} ({t['level']}); sent to "
                     f"{', '.join(t['sent_to']) or '-'}")
    return lines


def _next_wait(began: float, started: float, cfg: MonitoringSettings, rounds: int | None, done: int,
               for_s: float | None) -> float | None:
    """Seconds until the next round, None when the bounds say stop."""
    now = time.monotonic()
    if rounds is not None and done >= rounds:
        return None
    wait = max(0.0, cfg.health_interval_s - (now - began))
    if for_s is not None:
        left = for_s - (now - started)
        if left <= wait:
            return None
    return wait


def watch(chosen: list[Target], home: Path, model: str, cfg: MonitoringSettings, env: dict[str, str], *,
          rounds: int | None = None, for_s: float | None = None, stop: threading.Event | None = None,
          say: Callable[[str], None] | None = None) -> dict:
    """Check ``chosen`` every ``cfg.health_interval_s`` until ``stop`` is set, ``rounds`` rounds were made or
    ``for_s`` seconds passed (at least one round always runs). Returns what the last round found."""
    stop = stop or threading.Event()
    say = say or _say
    events = bool(env.get("PREFECT_API_URL"))
    directory = home / "monitoring"
    say(f"watching {len(chosen)} target(s) every {cfg.health_interval_s:g} s ({cfg.host_attempts} attempt(s), "
        f"{cfg.host_retry_wait_s:g} s apart); heartbeat {directory / 'health-watcher.json'}; Prefect events "
        + (f"to {env['PREFECT_API_URL']}" if events else "off (PREFECT_API_URL unset)"))
    started, done, states, result = time.monotonic(), 0, {}, {}
    while True:
        began = time.monotonic()
        result = health_round(chosen, home, model, cfg, env, events=events, heartbeat="alive")
        done += 1
        write_heartbeat(directory, result["at"], cfg.health_interval_s, done, result["targets"], os.getpid(),
                        boot_clock())
        for line in changes(states, result):
            say(line)
        wait = _next_wait(began, started, cfg, rounds, done, for_s)
        if wait is None or stop.wait(wait):
            break
    say(f"{_stamp(time.time())} stopped after {done} round(s)")
    return {"rounds": done, "targets": result.get("targets", {}), "heartbeat": str(directory / "health-watcher.json")}


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set: the watcher finishes the round under way and exits 0."""
    stop = threading.Event()

    def _handler(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop
