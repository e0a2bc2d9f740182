"""Monitoring of a host with two server processes under one gunicorn master: any worker answers for both."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest

from tests.faults.conftest import AUTH, golden_request, supervised, worker_pids
from tests.serving.test_live_server import _call

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BATCH = 20
MAX_REQUESTS = 400        # new connections until both workers scored some (bounded in count)
READS = 6                 # reads of each view, each on a new connection: both workers answer some
PREDICTED = re.compile(r'^serving_requests_total\{endpoint="predict",status="200",version="1"\} (\S+)$', re.M)


def _scored_by_worker(state) -> dict[int, int]:
    """Requests in each worker's shared windows (the ``windows`` table of run/monitoring/scored.sqlite)."""
    out: dict[int, int] = {}
    db = sqlite3.connect(state.parent / "monitoring" / "scored.sqlite", timeout=30)
    try:
        for worker, payload in db.execute("SELECT worker, payload FROM windows WHERE kind = 'w'"):
            pid = int(worker.split("-")[0])
            out[pid] = out.get(pid, 0) + sum(v["requests"] for v in json.loads(payload).values())
    finally:
        db.close()
    return out


def test_two_workers_count_every_request_and_join_every_label_whoever_answers(served_models, tmp_path, figure):
    with supervised(served_models, tmp_path, workers=2) as server:
        port, state = server["port"], server["state"]
        pids = sorted(worker_pids(server["master"]))
        body = json.loads(golden_request(served_models))
        ids: list[str] = []
        while len(ids) < MAX_REQUESTS:
            for _ in range(BATCH):                       # _call: one new connection per request
                status, answer = _call(port, "POST", "/predict", body)
                assert status == 200, answer
                ids.append(answer["request_id"])
            assert _call(port, "GET", "/monitoring/window?since=0")[0] == 200    # makes both share their windows
            if sorted(p for p, n in _scored_by_worker(state).items() if n) == pids:
                break
        by_worker = _scored_by_worker(state)
        assert sorted(p for p, n in by_worker.items() if n) == pids, f"all {len(ids)} requests went to {by_worker}"
        n = len(ids)

        answered_by, took = set(), []
        for _ in range(READS):
            text = _metrics(port)
            assert float(PREDICTED.search(text).group(1)) == n
            started = time.perf_counter()
            status, window = _call(port, "GET", "/monitoring/window?since=0")
            took.append(time.perf_counter() - started)
            assert status == 200 and window["workers"]["late"] == [] and window["workers"]["merged"] == 2
            assert window["versions"]["1"]["requests"] == window["versions"]["1"]["rows"] == n
            assert window["awaiting_labels"]["requests"] == n
            summary = _call(port, "GET", "/monitoring/summary?minutes=60")[1]
            assert summary["versions"]["1"]["requests"] == n
            answered_by.add(_call(port, "GET", "/health")[1]["pid"])
        figure("host_monitoring_window_read_ms", round(1e3 * sorted(took)[len(took) // 2], 1), "ms",
               f"/monitoring/window?since=0 with 2 workers (median of {READS}, asks the other worker to share its "
               "windows)")

        outcomes: dict[str, int] = {}
        for i, rid in enumerate(ids):                    # one label per call: both workers receive some
            status, answer = _call(port, "POST", "/feedback", {"labels": [{"request_id": rid, "label": i % 2}]},
                                   headers=AUTH)
            assert status == 200, answer
            for key in ("accepted", "unknown"):
                outcomes[key] = outcomes.get(key, 0) + answer[key]
        assert outcomes == {"accepted": n, "unknown": 0}
        for _ in range(READS):
            labels = _call(port, "GET", "/monitoring/window?since=0")[1]["versions"]["1"]["labels"]
            assert sum(hour["n"] for hour in labels) == n
            status, labelled = _call(port, "GET", "/monitoring/labelled?version=1", headers=AUTH)
            assert status == 200 and labelled["returned"] == labelled["labelled"] == n
            assert sorted(r["request_id"] for r in labelled["rows"]) == sorted(ids)
            assert sum(r["label"] for r in labelled["rows"]) == n // 2
            assert re.search(r'^serving_labelled_rows\{version="1"\} (\S+)$', _metrics(port), re.M)


def _metrics(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()
