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
from contextlib import contextmanager
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


def _heartbeat_rounds(directory: str) -> None:
    """The watcher's heartbeat and the health check's judgement of it (every 1 s: silent after 3 s), in a
    process whose clock the test steps: ``beat`` writes one, ``judge`` judges the last."""
    from tasks.monitoring.liveness import boot_clock, read_heartbeat, watcher_silence, write_heartbeat

    for n, line in enumerate(sys.stdin):
        silent = None
        if line.strip() == "beat":
            write_heartbeat(Path(directory), time.time(), 1.0, n, {}, os.getpid(), boot_clock())
        else:
            alarm = watcher_silence(read_heartbeat(Path(directory)), time.time(), 1.0, deployed=True)
            silent = alarm.message if alarm else None
        print(json.dumps({"wall": time.time(), "silent": silent}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "heartbeat":
        _heartbeat_rounds(sys.argv[2])
    else:
        _monitor_rounds(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), sys.argv[6])
    sys.exit(0)

from testkit.demo import make_demo  # noqa: E402  (the script above needs none of the test's imports)
from testkit.receiver import Receiver  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.faults.conftest import supervised, wait_until  # noqa: E402
from tests.flows.test_monitor_flow import MONITORING, _rows  # noqa: E402
from tests.serving.test_live_server import _call  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# Round by round: the clock's offset from the true time, and how the round judges.
STEPS = [("+0", "now"), ("-3600", "now"), ("+0", "now"), ("-3600", "now"), ("+0", "now"),
         ("-3600", "later"), ("+0", "later"), ("-3600", "later")]


@contextmanager
def _stepped(*args: str, offset: Path):
    """This module as a script (``args``) under libfaketime, its wall clock ``offset``'s; yields
    ``ask(step, line)``: set the offset (``+0``, ``-3600``), send one line, return its JSON answer."""
    if not Path(FAKETIME_LIB).exists():
        raise AssertionError(f"{FAKETIME_LIB} missing: make system-deps installs Debian's faketime")
    offset.write_text("+0\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults.test_clock_step", *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(step: str, line: str) -> dict:
        offset.write_text(step + "\n")
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline() or "null")
        assert answer is not None, f"the stepped process ended ({proc.poll()})"
        return answer

    try:
        yield ask
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def _fired_and_resolved_once(rounds: list[dict]) -> tuple[list, list]:
    """Both PSI alarms fired in the first round and resolved in the first ``later`` one, once each; the
    steps alone changed nothing."""
    fired = [(rule, level) for r in rounds for state, rule, level in r["transitions"] if state == "firing"]
    resolved = [rule for r in rounds for state, rule, _ in r["transitions"] if state == "resolved"]
    assert {"psi:age", "psi:region"} <= {rule for rule, _ in fired}, rounds
    assert len(fired) == len(set(fired)) and len(resolved) == len(set(resolved)), rounds    # once each
    assert [r["transitions"] for r in rounds[1:5]] == [[]] * 4, rounds
    assert sorted(resolved) == sorted(rule for rule, _ in fired) and rounds[-1]["firing"] == [], rounds
    assert [r["transitions"] for r in rounds[6:]] == [[]] * 2, rounds
    return fired, resolved


def _sent_once(received: list[tuple[str, dict]], transitions: int) -> tuple[list, list]:
    """No page, resolution or Slack message sent twice; one Slack message per transition."""
    pages = [b for p, b in received if p == "/pagerduty"]
    for action in ("trigger", "resolve"):
        sent = [b["dedup_key"] for b in pages if b["event_action"] == action]
        assert len(sent) == len(set(sent)), (action, pages)
    slack = [b["text"] for p, b in received if p == "/slack"]
    assert len(slack) == len(set(slack)) == transitions, slack
    return pages, slack


def _no_negative_duration(history_file: Path) -> None:
    history = [json.loads(line) for line in history_file.read_text().splitlines()]
    since = {h["key"]: h["at"] for h in history if h["state"] == "firing"}
    durations = [h["at"] - since[h["key"]] for h in history if h["state"] == "resolved"]
    assert durations and min(durations) >= 0, durations


@pytest.mark.slow
def test_an_hour_back_and_forward_fires_and_resolves_each_alarm_once(served_models, tmp_path, figure):
    home, offset = tmp_path / "home", tmp_path / "faketime"
    (home / "monitoring").mkdir(parents=True)
    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text(MONITORING)
    offset.write_text("+0\n")
    rounds = []
    with supervised(served_models, tmp_path) as server, Receiver() as rx:
        _shifted_traffic(server["port"])
        with _stepped("monitor", str(server["port"]), str(served_models["model_dir"]), str(home), str(monitoring),
                      rx.url, offset=offset) as ask:
            for step, how in STEPS:
                began = time.monotonic()
                answer = ask(step, how)
                rounds.append({**answer, "step": step, "how": how, "took_s": time.monotonic() - began})
        received = list(rx.received)
    for r in rounds:
        print("ROUND", r["step"], r["how"], round(r["wall"] - time.time()), r["transitions"], r["error"])
    assert all(r["error"] is None for r in rounds), rounds
    assert abs(rounds[1]["wall"] - rounds[0]["wall"] + HOUR) < 60, "the monitor's clock did not step back"
    fired, resolved = _fired_and_resolved_once(rounds)
    pages, slack = _sent_once(received, len(fired) + len(resolved))
    _no_negative_duration(home / "monitoring" / "alarm-history.jsonl")
    figure("clock_step_rounds", len(rounds), "rounds", "monitor rounds, the clock stepped -1 h and +1 h between them")
    figure("clock_step_alarms", len(fired), "alarms", f"fired once each, resolved once each ({len(pages)} pages, "
           f"{len(slack)} Slack messages)")
    figure("clock_step_round_s", round(max(r["took_s"] for r in rounds), 2), "s", "the slowest round")


def test_a_stepped_clock_neither_silences_a_live_watcher_nor_hides_a_dead_one(tmp_path, figure):
    """The watcher's heartbeat is judged on the clock since boot (``liveness.heartbeat_age``): an hour
    forward does not make a live watcher silent; an hour back (a heartbeat written while the clock was an
    hour ahead) does not hide one that stopped for an hour."""
    (tmp_path / "monitoring").mkdir()
    with _stepped("heartbeat", str(tmp_path / "monitoring"), offset=tmp_path / "faketime") as ask:
        ask("+0", "beat")
        ahead = ask("+3600", "judge")
        assert ahead["silent"] is None, ahead          # before: "health watcher silent for 3600 s"
        ask("+3600", "beat")                           # written while the clock was an hour ahead
        back = ask("+0", "judge")
        assert back["silent"] is None, back
        stopped = time.monotonic()                     # no beat from here on: the watcher has stopped
        silent = wait_until(lambda: ask("+0", "judge")["silent"], 15, "the stopped watcher to be called silent",
                            interval=0.2)
        took = time.monotonic() - stopped
    print("SILENT", silent)
    # Measured: 3.0-3.2 s (three of its 1 s rounds); by the wall clock it would have been an hour and 3 s.
    assert 3 <= took < 6 and "silent for 3 s" in silent, (took, silent)
    figure("clock_step_silent_s", round(took, 1), "s", "a watcher stopped after the clock stepped back 1 h to "
           "its silence alarm (silent after 3 rounds of 1 s)")
