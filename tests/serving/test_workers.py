"""Several server processes on a host: the desired state's file, the workers' records, following it."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

import serving.workers.state as workers_mod
import serving.workers.sync as sync_mod
from serving.api.app import create_app
from serving.contract.errors import ServingError
from serving.contract.processes import started_at
from serving.scoring.versions import LoadedVersions
from serving.settings import ServingSettings, threads_per_worker
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

TOKEN = "workers-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


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


@pytest.mark.parametrize("workers, cpus, threads", [(None, 2, 2), (1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 16, 8)])
def test_each_worker_gets_its_share_of_the_cpus(workers, cpus, threads):
    assert threads_per_worker(workers, cpus) == threads


# ------------------------------------------------------------ following the desired state
@pytest.fixture
def fake_store(monkeypatch, tmp_path):
    """Loads that cost nothing; a version directory named ``bad`` fails its checks."""
    def verified(root, model_dir, version, warm, digest):
        if Path(model_dir).name == "bad":
            raise ServingError(f"{model_dir}/{version}: checksum mismatch")
        meta = SimpleNamespace(version=version, files={})
        return SimpleNamespace(metadata=meta, version_dir=Path(model_dir) / version, metadata_sha256=digest), 0.0
    monkeypatch.setattr(LoadedVersions, "_verified", staticmethod(verified))
    return LoadedVersions()


def _snapshot(default, versions, model_dir="/m", weights=None, shadow=None, previous=None):
    return {"default": default, "previous": previous, "shadow": shadow, "weights": weights or {},
            "models": {v: {"model_dir": model_dir, "metadata_sha256": v * 64} for v in versions}}


def test_a_follower_loads_what_it_lacks_keeps_what_it_has_and_drops_the_rest(fake_store):
    store = fake_store
    assert store.converge(Path("/"), _snapshot("1", ["1", "2"])) == ["1", "2"]
    kept = store.routing.models["1"]
    assert store.converge(Path("/"), _snapshot("3", ["1", "3"], weights={"1": 1, "3": 3}, shadow="1",
                                               previous="1")) == ["3"]
    routing = store.routing
    assert routing.models["1"] is kept and sorted(routing.models) == ["1", "3"]
    assert routing.default == "3" and routing.previous == "1" and routing.weights() == {"1": 0.25, "3": 0.75}
    assert routing.shadow == "1"
    assert store.snapshot()["models"]["1"]["metadata_sha256"] == "1" * 64


def test_a_follower_whose_load_fails_keeps_serving_what_it_served(fake_store):
    store = fake_store
    store.converge(Path("/"), _snapshot("1", ["1"]))
    before = store.routing
    wanted = _snapshot("2", ["1", "2"])
    wanted["models"]["2"]["model_dir"] = "/bad"
    with pytest.raises(ServingError, match="kept what was served.*version 2: /bad/2: checksum mismatch"):
        store.converge(Path("/"), wanted)
    assert store.routing is before and store.routing.default == "1"


# ------------------------------------------------------------ one real process following the file
def _settings(served_models, state: Path, **extra) -> ServingSettings:
    return ServingSettings(model_root=served_models["root"], admin_token=TOKEN, state_file=state,
                           model_dir=served_models["model_dir"], model_version="1", **extra)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _own_record(state: Path) -> dict:
    return json.loads((workers_dir(state) / f"{os.getpid()}.json").read_text())


def test_generations_grow_by_one_per_change_and_a_change_says_who_converged(served_models, tmp_path):
    state = tmp_path / "run" / "serving-state.json"
    with TestClient(create_app(_settings(served_models, state))) as client:
        assert read_state(state)["generation"] == 1                                  # the first start writes it
        r = client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "2"},
                        headers=AUTH)
        assert r.status_code == 200
        workers = r.json()["workers"]
        assert workers["generation"] == 2 and workers["all_converged"] and workers["converged"] == [os.getpid()]
        assert client.post("/default", params={"version": "1"}, headers=AUTH).json()["workers"]["generation"] == 3
        refused = client.post("/default", params={"version": "7"}, headers=AUTH)
        assert refused.status_code == 404 and read_state(state)["generation"] == 3       # nothing written
        record = _own_record(state)
        assert record["generation"] == 3 and record["default"] == "1" and sorted(record["models"]) == ["1", "2"]
        assert record["models"]["2"]["files"] == json.loads(
            (served_models["model_dir"] / "2" / "metadata.json").read_text())["files"]
        health = client.get("/health").json()
        assert health["status"] == "healthy" and health["workers"]["agree"] and health["workers"]["count"] == 1
    assert not (workers_dir(state) / f"{os.getpid()}.json").exists()               # a process that ends says so


def test_a_change_written_by_another_worker_is_followed_within_a_second(served_models, tmp_path):
    state = tmp_path / "run" / "serving-state.json"
    with TestClient(create_app(_settings(served_models, state))) as client:
        desired = read_state(state)
        meta2 = client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "2",
                                             "default": "false"}, headers=AUTH)
        assert meta2.status_code == 200
        both = read_state(state)
        # Another process (same host) writes generation +1: version 2 the default.
        written = time.monotonic()
        write_json(state, {**both, "default": "2", "previous": "1", "generation": both["generation"] + 1})
        _wait(lambda: client.get("/health").json()["default_version"] == "2", 1.0, "the default to follow the file")
        assert time.monotonic() - written < 1.0
        assert _own_record(state)["generation"] == both["generation"] + 1
        # … then one that unloads version 2 again.
        write_json(state, {**desired, "generation": both["generation"] + 2})
        _wait(lambda: client.get("/health").json()["loaded_versions"] == ["1"], 1.0, "version 2 to be unloaded")


def test_a_worker_behind_the_file_catches_up_before_its_own_change(served_models, tmp_path, monkeypatch):
    state = tmp_path / "run" / "serving-state.json"
    monkeypatch.setattr(sync_mod, "WATCH_INTERVAL_S", 3600)      # its watcher sleeps: it falls behind
    with TestClient(create_app(_settings(served_models, state))) as client:
        client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "2",
                                     "default": "false"}, headers=AUTH)
        both = read_state(state)
        # "Another worker" splits the traffic: this one does not serve that yet.
        write_json(state, {**both, "weights": {"1": 1, "2": 1}, "generation": both["generation"] + 1})
        assert client.get("/model_info").json()["traffic_split"] == {}
        r = client.post("/default", params={"version": "2"}, headers=AUTH)
        assert r.status_code == 200
        after = read_state(state)
        # The split written by the other worker survives this worker's change.
        assert after["generation"] == both["generation"] + 2 and after["weights"] == {"1": 0.5, "2": 0.5}
        assert after["default"] == "2"


def test_a_worker_that_cannot_follow_keeps_serving_and_health_is_degraded_naming_it(served_models, tmp_path):
    state = tmp_path / "run" / "serving-state.json"
    copy = served_models["root"] / "follow-fails"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(served_models["model_dir"] / "2", copy / "2")
    try:
        with TestClient(create_app(_settings(served_models, state))) as client:
            desired = read_state(state)
            meta = (copy / "2" / "metadata.json")
            digest = __import__("hashlib").sha256(meta.read_bytes()).hexdigest()
            meta.write_text(meta.read_text().replace('"release"', '"release" ', 1))   # its files changed since
            models = {**desired["models"], "2": {"model_dir": str(copy), "metadata_sha256": digest}}
            write_json(state, {**desired, "models": models, "default": "2", "previous": "1",
                               "generation": desired["generation"] + 1})
            _wait(lambda: _own_record(state)["failed_generation"], 2.0, "the failed attempt to be published")
            health = client.get("/health")
            assert health.json()["status"] == "degraded"
            assert health.status_code == 200                                   # it still serves
            body = health.json()
            assert body["default_version"] == "1" and body["workers"]["agree"] is False
            assert f"worker pid {os.getpid()} serves default 1" in body["reasons"][0]
            assert "generation" in body["reasons"][0] and "metadata" in body["reasons"][0]
            record = _own_record(state)
            assert record["generation"] == desired["generation"]
            assert record["failed_generation"] == desired["generation"] + 1 and "version 2" in record["last_error"]
            info = client.get("/model_info").json()
            assert info["workers"]["agree"] is False and info["workers"]["workers"][0]["pid"] == os.getpid()
            assert client.post("/predict", json={"features": [json.loads(
                (served_models["model_dir"] / "1" / "metadata.json").read_text())["golden_examples"][0]["features"]]}
                               ).json()["model_version"] == "1"
            # An admin change on this worker cannot start from the desired state: refused, nothing written.
            r = client.post("/default", params={"version": "1"}, headers=AUTH)
            assert r.status_code == 503 and "could not first serve the host's desired state" in r.json()["detail"]
            assert read_state(state)["generation"] == desired["generation"] + 1
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_several_workers_without_a_state_file_are_refused(monkeypatch, capsys):
    from serving.__main__ import main

    monkeypatch.delenv("SERVING_STATE_FILE", raising=False)
    monkeypatch.delenv("SERVING_WORKERS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--workers", "2"])
    assert exit_.value.code == 2 and "2 workers need SERVING_STATE_FILE" in capsys.readouterr().err


@pytest.mark.parametrize("state_file, expected", [(True, "cpus"), (False, 1)])
def test_the_default_is_one_worker_per_cpu_with_a_state_file_and_one_without(monkeypatch, tmp_path, state_file,
                                                                             expected):
    import serving.workers.supervise
    from serving.__main__ import main
    from serving.contract.processes import available_cpus

    started = []
    monkeypatch.setattr(serving.workers.supervise, "run",
                        lambda app, host, port, level, workers: started.append(workers))
    monkeypatch.delenv("SERVING_WORKERS", raising=False)
    if state_file:
        monkeypatch.setenv("SERVING_STATE_FILE", str(tmp_path / "run" / "serving-state.json"))
    else:
        monkeypatch.delenv("SERVING_STATE_FILE", raising=False)
    assert main([]) == 0
    assert started == [available_cpus() if expected == "cpus" else 1]


def test_the_master_empties_the_metrics_folder_and_drops_a_dead_workers_live_gauges(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from serving.workers.supervise import metrics_folder, worker_exited

    folder = tmp_path / "metrics"
    folder.mkdir()
    for name in ("counter_41.db", "gauge_livemax_41.db", "gauge_livesum_42.db"):
        (folder / name).write_bytes(b"x")
    assert metrics_folder(tmp_path / "serving-state.json") == folder and list(folder.iterdir()) == []
    for name in ("counter_41.db", "gauge_livemax_41.db", "gauge_livesum_42.db"):
        (folder / name).write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    worker_exited(None, SimpleNamespace(pid=41))
    assert sorted(p.name for p in folder.iterdir()) == ["counter_41.db", "gauge_livesum_42.db"]


def test_a_load_refused_on_one_worker_is_a_warning_on_every_worker_until_the_next_change(served_models, tmp_path):
    """/health and /model_info answer from whichever worker the connection reached: a refused /load is the
    host's news (HostEvents), shown while the host still serves the generation it was refused at."""
    state = tmp_path / "run" / "serving-state.json"
    with TestClient(create_app(_settings(served_models, state))) as client:
        refused = client.post("/load", params={"model_dir": str(served_models["root"] / "nowhere"), "version": "9"},
                              headers=AUTH)
        assert refused.status_code in (400, 404)
        (mine,) = HostEvents(state, 50).recent()
        assert mine["event"] == "load_failed" and mine["pid"] == os.getpid() and "version 9" in mine["detail"]
        # The same refusal as another worker of the host would have recorded it:
        generation = read_state(state)["generation"]
        HostEvents(state, 50).append({"at": time.time(), "event": "load_failed", "pid": 1, "generation": generation,
                                      "detail": "load of version 8 refused: checksum mismatch"})
        health = client.get("/health").json()
        assert "load of version 8 refused: checksum mismatch" in health["warnings"]
        assert health["recent_events"][-1]["detail"] == "load of version 8 refused: checksum mismatch"
        info = client.get("/model_info").json()
        assert info["last_load_error"] == "load of version 8 refused: checksum mismatch"
        # A change that went through since: the other worker's refusal is history, not a warning.
        assert client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "2"},
                           headers=AUTH).status_code == 200
        health = client.get("/health").json()
        assert health["warnings"] == [] and len(health["recent_events"]) == 2


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
