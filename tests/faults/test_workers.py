"""Two server processes under one gunicorn master on 127.0.0.1: every admin change reaches both."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time

import pytest

from tests.faults.conftest import AUTH, golden_request, supervised, wait_until, worker_pids
from tests.serving.test_live_server import _call

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MAX_PROBES = 400          # requests per check, each on a new connection (so they land on both workers)
PROBE_SECONDS = 30


def _probe(port: int, body: bytes, pids: list[int]) -> list[tuple[float, int | None, str, str]]:
    """/model_info and /predict on new connections until both workers answered /model_info at least 10
    times each (bounded in count and time): (sent at, pid, default version, predicted version)."""
    seen: dict[int, int] = {}
    out = []
    deadline = time.monotonic() + PROBE_SECONDS
    for _ in range(MAX_PROBES):
        if time.monotonic() > deadline or (len(seen) == len(pids) and min(seen.values()) >= 10):
            break
        sent = time.monotonic()
        info = _call(port, "GET", "/model_info")[1]
        status, answer = _call(port, "POST", "/predict", json.loads(body))
        assert status == 200, answer
        seen[info["pid"]] = seen.get(info["pid"], 0) + 1
        out.append((sent, info["pid"], info["default_version"], answer["model_version"]))
    assert sorted(seen) == sorted(pids), f"requests reached workers {sorted(seen)}, not all of {pids}"
    return out


def _convergence_s(state) -> float:
    """The last worker's apply time minus the time the desired state was written."""
    desired = json.loads(state.read_text())
    records = [json.loads(p.read_text()) for p in (state.parent / "workers").glob("*.json")]
    return max(r["updated_at"] for r in records if r["generation"] == desired["generation"]) - desired["written_at"]


def test_two_workers_serve_a_load_and_a_default_within_a_second_of_the_answer(served_models, tmp_path, figure):
    with supervised(served_models, tmp_path, workers=2) as server:
        port, model_dir = server["port"], served_models["model_dir"]
        pids = sorted(worker_pids(server["master"]))
        assert len(pids) == 2
        body = golden_request(served_models)

        status, loaded = _call(port, "POST", f"/load?model_dir={model_dir}&version=2", headers=AUTH, timeout=120)
        answered = time.monotonic()
        assert status == 200 and loaded["workers"]["all_converged"], loaded
        assert loaded["workers"]["converged"] == pids and loaded["workers"]["not_converged"] == []
        figure("load_convergence_s", round(_convergence_s(server["state"]), 3), "s",
               "/load v2: last worker's apply minus the desired state's write (2 workers)")
        probes = _probe(port, body, pids)
        stale = [p for p in probes if (p[2], p[3]) != ("2", "2")]
        assert stale == [] and probes[0][0] - answered < 1.0

        status, switched = _call(port, "POST", "/default?version=1", headers=AUTH)
        answered = time.monotonic()
        assert status == 200 and switched["workers"]["all_converged"] and switched["workers"]["converged"] == pids
        figure("default_convergence_s", round(_convergence_s(server["state"]), 3), "s",
               "/default v1: last worker's apply minus the desired state's write (2 workers)")
        probes = _probe(port, body, pids)
        assert [p for p in probes if (p[2], p[3]) != ("1", "1")] == [] and probes[0][0] - answered < 1.0

        health = _call(port, "GET", "/health")[1]
        workers = health["workers"]
        assert health["status"] == "healthy" and workers["agree"] and workers["count"] == workers["expected"] == 2
        assert [w["pid"] for w in workers["workers"]] == pids
        assert {(w["default"], tuple(w["versions"])) for w in workers["workers"]} == {("1", ("1", "2"))}


def test_a_worker_that_cannot_follow_is_named_and_the_host_is_degraded(served_models, tmp_path):
    copy = served_models["root"] / "follow-fails-live"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(served_models["model_dir"] / "2", copy / "2")
    with supervised(served_models, tmp_path, workers=2, SERVING_CONVERGE_TIMEOUT_S="3") as server:
        port = server["port"]
        leader, follower = sorted(worker_pids(server["master"]))
        os.kill(follower, signal.SIGSTOP)          # it cannot follow while the leader takes the /load …
        try:
            status, loaded = _call(port, "POST", f"/load?model_dir={copy}&version=2", headers=AUTH, timeout=120)
            assert status == 200 and loaded["default_version"] == "2"
            # … which answers within its bound, and says who did not converge rather than pretend.
            assert loaded["workers"]["all_converged"] is False and loaded["workers"]["converged"] == [leader]
            assert [w["pid"] for w in loaded["workers"]["not_converged"]] == [follower]
            meta = copy / "2" / "metadata.json"     # … and by the time it wakes, version 2's files changed
            meta.write_bytes(meta.read_bytes().replace(b'"release"', b'"release" ', 1))
        finally:
            os.kill(follower, signal.SIGCONT)

        def degraded():
            # The record first: a /health read after the follower recorded its failure names its error (read
            # before, it may show the follower behind while it was still trying).
            record = json.loads((server["state"].parent / "workers" / f"{follower}.json").read_text())
            health = _call(port, "GET", "/health")[1]
            return health["status"] == "degraded" and record.get("failed_generation") and health

        health = wait_until(degraded, 30, "/health to report the follower's failure")
        differences = health["workers"]["differences"]
        assert len(differences) == 1 and f"worker pid {follower} serves default 1" in differences[0]
        assert str(leader) not in differences[0] and "version 2" in differences[0]
        assert health["reasons"] == differences and health["workers"]["agree"] is False
        # Both keep serving: the follower what it served (version 1), the leader version 2.
        versions = {_call(port, "POST", "/predict", json.loads(golden_request(served_models)))[1]["model_version"]
                    for _ in range(60)}
        assert versions <= {"1", "2"} and "1" in versions
        digest = hashlib.sha256(meta.read_bytes()).hexdigest()
        assert digest != json.loads(server["state"].read_text())["models"]["2"]["metadata_sha256"]
    shutil.rmtree(copy, ignore_errors=True)
