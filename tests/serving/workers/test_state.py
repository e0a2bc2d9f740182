"""The files a host's server processes agree through: the desired state, its lock, worker records, host events."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

import serving.workers.state as workers_mod
from serving.contract.processes import started_at
from serving.workers.state import (
    HostEvents,
    StateLock,
    StateLockTimeout,
    live_workers,
    read_state,
    report,
    workers_dir,
    write_json,
    write_worker_record,
)

pytestmark = pytest.mark.unit

# ------------------------------------------------------------ the files
def test_the_state_file_is_replaced_whole_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "run" / "serving-state.json"
    write_json(path, {"generation": 1, "default": "1"})
    inode = path.stat().st_ino
    write_json(path, {"generation": 2, "default": "2"})
    assert read_state(path) == {"generation": 2, "default": "2"}
    assert path.stat().st_ino != inode                        # a new file renamed over the old one
    assert [p.name for p in path.parent.iterdir()] == ["serving-state.json"]
    assert read_state(tmp_path / "none.json") is None
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_state(path)


def _hold_lock(state_file: str, held, release) -> None:
    with StateLock(Path(state_file), timeout=5):
        held.set()
        release.wait(10)


def test_a_second_writer_waits_for_the_lock_and_gives_up_after_its_bound(tmp_path):
    state = tmp_path / "serving-state.json"
    held, release = multiprocessing.Event(), multiprocessing.Event()
    other = multiprocessing.get_context("fork").Process(target=_hold_lock, args=(str(state), held, release))
    other.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with pytest.raises(StateLockTimeout, match="another server process held"):
            StateLock(state, timeout=0.3).acquire()
        assert 0.3 <= time.monotonic() - started < 3
        release.set()
        other.join(10)
        with StateLock(state, timeout=2):                     # free again once the holder lets go
            pass
    finally:
        release.set()
        other.join(10)


def _record(pid: int, default: str = "1", versions: dict | None = None, generation: int = 1, **extra) -> dict:
    versions = versions or {"1": "a" * 64}
    return {"pid": pid, "started_at": started_at(pid), "generation": generation, "default": default,
            "shadow": None, "weights": {}, "last_error": None,
            "models": {v: {"model_dir": "/m", "metadata_sha256": h, "files": {"f": h}} for v, h in versions.items()},
            **extra}


def test_records_of_dead_or_reused_pids_are_ignored_and_pruned(tmp_path):
    state = tmp_path / "serving-state.json"
    dead = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    write_worker_record(state, _record(os.getpid()))
    write_worker_record(state, _record(dead.pid))
    write_worker_record(state, {**_record(os.getppid()), "started_at": "1"})    # that pid now names another process
    assert [w["pid"] for w in live_workers(state)] == [os.getpid()]
    assert len(list(workers_dir(state).glob("*.json"))) == 3
    live_workers(state, prune=True)
    assert [p.name for p in workers_dir(state).glob("*.json")] == [f"{os.getpid()}.json"]


def test_the_report_names_the_worker_that_differs_and_why():
    desired = {"generation": 5, "default": "2", "shadow": None, "weights": {},
               "models": {"1": {"metadata_sha256": "a" * 64}, "2": {"metadata_sha256": "b" * 64}}}
    good = _record(101, "2", {"1": "a" * 64, "2": "b" * 64}, generation=5)
    behind = _record(202, "1", {"1": "a" * 64}, generation=4, failed_generation=5,
                     last_error="generation 5: version 2: checksum mismatch")
    agreed = report(desired, [good, {**good, "pid": 303}], expected=2)
    assert agreed["agree"] and agreed["count"] == 2 and agreed["differences"] == [] and agreed["generation"] == 5
    split = report(desired, [good, behind], expected=2)
    assert split["agree"] is False and len(split["differences"]) == 1
    line = split["differences"][0]
    assert "worker pid 202 serves default 1" in line and "desired state (generation 5) is default 2" in line
    assert "checksum mismatch" in line and "101" not in line
    assert [w["versions"] for w in split["workers"]] == [["1", "2"], ["1"]]
    full = report(desired, [good], full=True)["workers"][0]["versions"]
    assert full["2"] == {"metadata_sha256": "b" * 64, "files": {"f": "b" * 64}}


def test_host_events_are_cut_back_in_place_to_the_newest(tmp_path, monkeypatch):
    monkeypatch.setattr(workers_mod, "EVENTS_TRIM_BYTES", 2000)
    events = HostEvents(tmp_path / "serving-state.json", kept=5)
    for i in range(200):
        events.append({"event": "load_failed", "detail": f"refusal {i}"})
    recent = events.recent()
    assert [e["detail"] for e in recent] == [f"refusal {i}" for i in range(195, 200)]
    assert events.path.stat().st_size <= 2000 + 100
    with open(events.path, "ab") as fh:        # a line torn by a crash is skipped
        fh.write(b'{"event": "load_fa')
    assert [e["detail"] for e in events.recent()][-1] == "refusal 199"
