"""Under load: hot swaps between three versions, clients that hang up mid-request, and a steady soak."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from testkit.load import Load, percentile
from tests.faults.conftest import (
    AUTH,
    golden_request,
    growth_mb_per_hour,
    mixed_bodies,
    sampling_rss,
    supervised,
    wait_until,
    worker_pids,
)
from tests.serving.test_live_server import _call

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SWAP_SECONDS = 30
# `make test` runs the soak for 60 s (no 5xx, memory in bounds); `make soak` runs the same test for the issue's
# 10 minutes (FAULT_SOAK_SECONDS=600), long enough for the growth's slope to mean something.
SOAK_SECONDS = float(os.environ.get("FAULT_SOAK_SECONDS", 60))
LONG_SOAK_SECONDS = 300     # from this length on, the growth per hour is asserted (over 60 s it is noise)
RATE, CLIENTS = 40, 4       # requests per second in total, from 4 paced clients


def test_hot_swaps_between_three_versions_under_8_clients_drop_nothing(three_models, tmp_path, figure):
    with supervised(three_models, tmp_path) as server:
        port, model_dir = server["port"], three_models["model_dir"]
        for version in ("2", "3"):
            status, body = _call(port, "POST", f"/load?model_dir={model_dir}&version={version}&default=false",
                                 headers=AUTH, timeout=120)
            assert status == 200, body
        swaps, swap_windows = 0, []
        with Load(port, golden_request(three_models), clients=8, max_requests=50_000,
                  max_seconds=SWAP_SECONDS + 30) as load:
            wait_until(lambda: load.count() >= 100, 30, "load to start")
            deadline = time.monotonic() + SWAP_SECONDS
            order = ["2", "3", "1"]
            while time.monotonic() < deadline:
                version = order[swaps % 3]
                # The previous default and the versions loaded stay: /default switches, /load (re)loads.
                path = f"/default?version={version}"
                if version not in _call(port, "GET", "/health")[1]["loaded_versions"]:
                    path = f"/load?model_dir={model_dir}&version={version}"
                t0 = time.monotonic()
                status, body = _call(port, "POST", path, headers=AUTH, timeout=120)
                swap_windows.append((t0, time.monotonic()))
                assert status == 200, (path, body)
                swaps += 1
                time.sleep(0.25)          # pacing between swaps, not waiting for anything
        outcomes = load.stop()
    failed = [o for o in outcomes if o.status != 200]
    near_swaps = [o.seconds for o in outcomes
                  if any(a - 0.05 <= o.started <= b + 0.05 for a, b in swap_windows)]
    figure("requests", len(outcomes), "requests", f"8 clients for {SWAP_SECONDS} s")
    figure("swaps", swaps, "swaps", "default moved 2 -> 3 -> 1 -> … (a version unloaded is loaded again)")
    figure("failed_requests", len(failed), "requests")
    p99_swaps, p99 = percentile(near_swaps, 99) * 1000, percentile([o.seconds for o in outcomes], 99) * 1000
    figure("p99_during_swaps", round(p99_swaps, 1), "ms", f"{len(near_swaps)} requests")
    figure("p99_overall", round(p99, 1), "ms")
    assert failed == [], failed[:10]
    # Measured p99: 23.1-37.4 ms during swaps, 21.0-34.0 ms overall (three runs, the higher ones beside other
    # tests; docs/explanation/reliability.md); 2x margin on the highest.
    assert p99_swaps < 75 and p99 < 70, (p99_swaps, p99)
    assert swaps >= 20 and {o.version for o in outcomes} == {"1", "2", "3"}


def _hang_up(port: int, body: bytes, how: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        if how == "mid-body":           # the server is still reading the body
            s.sendall(head + body[: len(body) // 2])
        elif how == "before-answer":    # the request is complete; the answer is never read
            s.sendall(head + body)
        else:                           # headers only
            s.sendall(head)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")   # RST on close


def test_200_clients_hanging_up_mid_request_leave_the_server_serving(served_models, tmp_path, figure):
    rows = json.loads(golden_request(served_models))["features"] * 2000    # a request the model takes a while on
    big = json.dumps({"features": rows}).encode()
    with supervised(served_models, tmp_path, SERVING_MAX_BATCH_ROWS="5000") as server:
        port = server["port"]
        errors: list[str] = []

        def client(i: int) -> None:
            try:
                _hang_up(port, big, ("mid-body", "before-answer", "headers")[i % 3])
            except OSError as exc:
                errors.append(repr(exc))

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # Nothing stays stuck: the scorer's queue drains and a plain request is answered.
        wait_until(lambda: _call(port, "GET", "/health")[1]["queue_depth"] == 0, 60, "the queue to drain")
        drained = time.monotonic() - t0
        status, body = _call(port, "POST", "/predict", body=json.loads(golden_request(served_models)), timeout=30)
        health = _call(port, "GET", "/health")[1]
        log = server["log"].read_text()
    figure("clients", 200, "clients", "a third each: hang up mid-body, before the answer, after the headers")
    figure("connect_errors", len(errors), "clients")
    figure("seconds_until_idle", round(drained, 2), "s")
    assert errors == [] and status == 200 and health["status"] == "healthy" and health["warnings"] == []
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_a_steady_soak_of_valid_and_invalid_requests(served_models, tmp_path, figure):
    """Mixed traffic at a steady rate: no 5xx, and the server's memory does not keep growing."""
    with supervised(served_models, tmp_path) as server:
        port = server["port"]
        [worker] = worker_pids(server["master"])
        t0 = time.monotonic()
        with sampling_rss(worker) as samples:
            with Load(port, mixed_bodies(served_models), clients=CLIENTS,
                      max_requests=int(SOAK_SECONDS * RATE / CLIENTS), max_seconds=SOAK_SECONDS + 30,
                      interval=CLIENTS / RATE) as load:
                outcomes = load.wait()
        elapsed = time.monotonic() - t0
        health = _call(port, "GET", "/health")[1]
    labels = [str(o.status or o.version) for o in outcomes]      # an answer's status, or the error's name
    statuses = {s: labels.count(s) for s in sorted(set(labels))}
    growth_mb_h, n = growth_mb_per_hour(samples, samples[0][0] + min(60, SOAK_SECONDS / 4))   # after warm-up
    figure("seconds", round(elapsed), "s", f"{RATE} requests/s, 3 valid : 5 invalid")
    figure("requests", len(outcomes), "requests", json.dumps(statuses))
    figure("rss_start_mb", round(samples[0][1] / 1024, 1), "MB")
    figure("rss_end_mb", round(samples[-1][1] / 1024, 1), "MB")
    figure("rss_growth_mb_per_hour", round(growth_mb_h, 1), "MB/h", f"least squares over {n} samples")
    five_xx = [o for o in outcomes if o.status == 0 or o.status >= 500]
    assert five_xx == [], five_xx[:10]
    assert {o.status for o in outcomes} <= {200, 413, 422, 400} and health["status"] == "healthy"
    assert len(outcomes) >= 0.9 * SOAK_SECONDS * RATE
    if SOAK_SECONDS >= LONG_SOAK_SECONDS:
        # Measured: 28 MB/h over 10 minutes (27.8 in a clean clone, docs/explanation/reliability.md); 2x margin.
        assert growth_mb_h < 56, samples
    else:
        # Measured over 60 s: 538.7 -> 539.1 MB (+0.4 MB); the 10-minute soak's 28 MB/h is 0.5 MB a minute.
        # 3x that: one sample's noise is a large share of so small a growth.
        assert (samples[-1][1] - samples[0][1]) / 1024 < 1.5, samples
