"""One server process among several: following the desired state, and changes as its next generation."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

import serving.workers.sync as sync_mod
from serving.api.app import create_app
from serving.contract.errors import ServingError
from serving.scoring.versions import LoadedVersions
from serving.settings import ServingSettings
from serving.workers.state import (
    HostEvents,
    read_state,
    workers_dir,
    write_json,
)

pytestmark = pytest.mark.unit

TOKEN = "workers-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


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
            _wait(lambda: _own_record(state)["failed_generation"], 2.0, "the failed attempt to be in its record")
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
