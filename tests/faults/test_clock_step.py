"""The wall clock stepped back and forward an hour under live alarms (issue 23 item 3).

A model server (``python -m serving``, real clock) has recorded shifted traffic: PSI alarms are live. The
monitor runs as its own process under libfaketime (``LD_PRELOAD`` with ``FAKETIME_TIMESTAMP_FILE`` read at
every call and ``FAKETIME_DONT_FAKE_MONOTONIC``: only CLOCK_REALTIME moves, as an NTP step does). Between
its rounds the test steps that clock −1 h and +1 h. Each round is the monitor's: ``watch_target`` reads and
judges the target's windows, ``AlarmBook`` fires or resolves, ``deliver`` posts to Slack and PagerDuty
(a local receiver). The probe of the host's layout is replaced (this server is not started from a release);
it reads no clock. Every alarm must fire once and resolve at most once, nothing sent twice, no negative
duration in the history.

The process is this module run as a script (``python -m tests.faults.test_clock_step``): a line on its
stdin is one round (``now``: on the server's clock; ``later``: judged three hours after it, the lookback
empty), it answers one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"    # Debian's libfaketime (make system-deps)
HOUR = 3600


def _monitor_rounds(port: int, model_dir: Path, home: Path, monitoring: Path, receiver: str) -> None:
    """The monitor process: one round per line on stdin."""
    from serving.contract.metadata import read_metadata
    from tasks.deploy.targets import Target
    from tasks.monitoring import watch
    from tasks.monitoring.alarms import AlarmBook, PagerDutyEvents, SlackWebhook, deliver
    from tasks.monitoring.probe import Finding
    from tasks.monitoring.settings import load_monitoring

    watch.check_target = lambda target, champion, metadata: Finding(target.name, None, "ok (not probed)", "1")
    target = Target(name="t1", base_dir=home / "t1", port=port)
    metadata, cfg = read_metadata(model_dir / "1"), load_monitoring(monitoring)
    channels = {"slack": SlackWebhook(receiver + "/slack"),
                "pagerduty": PagerDutyEvents(receiver + "/pagerduty", "test-routing-key")}
    for line in sys.stdin:
        at = watch.server_clock(target) + 3 * HOUR if line.strip() == "later" else None
        watched = watch.watch_target(target, "1", metadata, cfg, at)
        with AlarmBook.locked(home / "monitoring") as book:
            transitions = book.update("t1", "test-model", watched["alarms"], time.time())
            book.save_state()
        book.log(transitions, deliver(transitions, channels))
        print(json.dumps({"wall": time.time(), "error": watched.get("window_error"), "firing": sorted(book.firing),
                          "transitions": [[t.state, t.alarm["rule"], t.alarm["level"]] for t in transitions]}),
              flush=True)


if __name__ == "__main__":
    _monitor_rounds(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
    sys.exit(0)

from testkit.demo import make_demo  # noqa: E402  (the script above needs none of the test's imports)
from testkit.receiver import Receiver  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.faults.conftest import supervised  # noqa: E402
from tests.flows.test_monitor_flow import MONITORING, _rows  # noqa: E402
from tests.serving.test_live_server import _call  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# Round by round: the clock's offset from the true time, and how the round judges.
STEPS = [("+0", "now"), ("-3600", "now"), ("+0", "now"), ("-3600", "now"), ("+0", "now"),
         ("-3600", "later"), ("+0", "later"), ("-3600", "later")]


def _shifted_traffic(port: int) -> None:
    """400 rows whose age and region moved: PSI alarms on both (tests/flows/test_monitor_flow.py's shift)."""
    import numpy as np

    frame = make_demo(n_rows=400, seed=321)
    frame["age"] = np.random.default_rng(0).integers(66, 80, len(frame))
    frame["region"] = "north"
    rows = _rows(frame)
    for i in range(0, len(rows), 20):
        status, answer = _call(port, "POST", "/predict", {"features": rows[i:i + 20]})
        assert status == 200, answer


def test_an_hour_back_and_forward_fires_and_resolves_each_alarm_once(served_models, tmp_path, figure):
    if not Path(FAKETIME_LIB).exists():
        raise AssertionError(f"{FAKETIME_LIB} missing: make system-deps installs Debian's faketime")
    home, offset = tmp_path / "home", tmp_path / "faketime"
    (home / "monitoring").mkdir(parents=True)
    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text(MONITORING)
    offset.write_text("+0\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    rounds = []
    with supervised(served_models, tmp_path) as server, Receiver() as rx:
        _shifted_traffic(server["port"])
        monitor = subprocess.Popen([sys.executable, "-m", "tests.faults.test_clock_step", str(server["port"]),
                                    str(served_models["model_dir"]), str(home), str(monitoring), rx.url], cwd=ROOT,
                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            for step, how in STEPS:
                offset.write_text(step + "\n")
                began = time.monotonic()
                monitor.stdin.write(how + "\n")
                monitor.stdin.flush()
                answer = json.loads(monitor.stdout.readline() or "null")
                assert answer is not None, "the monitor process ended"
                rounds.append({**answer, "step": step, "how": how, "took_s": time.monotonic() - began})
        finally:
            monitor.stdin.close()
            monitor.wait(timeout=30)
        received = list(rx.received)
    for r in rounds:
        print("ROUND", r["step"], r["how"], round(r["wall"] - time.time()), r["transitions"], r["error"])
    assert all(r["error"] is None for r in rounds), rounds
    assert abs(rounds[1]["wall"] - rounds[0]["wall"] + HOUR) < 60, "the monitor's clock did not step back"

    fired = [(rule, level) for r in rounds for state, rule, level in r["transitions"] if state == "firing"]
    resolved = [rule for r in rounds for state, rule, _ in r["transitions"] if state == "resolved"]
    assert {"psi:age", "psi:region"} <= {rule for rule, _ in fired}, rounds
    assert len(fired) == len(set(fired)) and len(resolved) == len(set(resolved)), rounds    # once each
    assert [r["transitions"] for r in rounds[1:5]] == [[]] * 4, rounds   # the steps alone change nothing
    assert sorted(resolved) == sorted(rule for rule, _ in fired) and rounds[-1]["firing"] == [], rounds
    assert [r["transitions"] for r in rounds[6:]] == [[]] * 2, rounds

    pages = [b for p, b in received if p == "/pagerduty"]
    keys = [b["dedup_key"] for b in pages]
    for action in ("trigger", "resolve"):
        sent = [b["dedup_key"] for b in pages if b["event_action"] == action]
        assert len(sent) == len(set(sent)), (action, keys)            # no duplicate page or resolution
    slack = [b["text"] for p, b in received if p == "/slack"]
    assert len(slack) == len(set(slack)) == len(fired) + len(resolved), slack

    history = [json.loads(line) for line in (home / "monitoring" / "alarm-history.jsonl").read_text().splitlines()]
    since = {h["key"]: h["at"] for h in history if h["state"] == "firing"}
    durations = [h["at"] - since[h["key"]] for h in history if h["state"] == "resolved"]
    assert durations and min(durations) >= 0, durations
    figure("clock_step_rounds", len(rounds), "rounds", "monitor rounds, the clock stepped -1 h and +1 h between them")
    figure("clock_step_alarms", len(fired), "alarms", f"fired once each, resolved once each ({len(pages)} pages, "
           f"{len(slack)} Slack messages)")
    figure("clock_step_round_s", round(max(r["took_s"] for r in rounds), 2), "s", "the slowest round")
