"""Memory that levels off: the server's bounded stores shortened by configuration until they fill within the
first minute, then the soak's mixed traffic kept going while the worker's resident memory is sampled.

The stores and their bounds here (docs/reference/serving-settings.md has the defaults):

    monitoring windows     SERVING_MONITOR_WINDOW_S=1 x SERVING_MONITOR_WINDOWS=30 kept (default 60 s x 1,440)
    label windows          SERVING_LABEL_WINDOW_S=60, kept SERVING_FEEDBACK_TTL_S + one window: 2 at a time
    scored rows awaiting   SERVING_FEEDBACK_MAX_ROWS=300 rows (15 valid rows/s: full in 20 s), TTL 60 s
      labels                 (labelled through /feedback twice a second)
    shadow comparisons     SERVING_SHADOW_LOG_SIZE=100 (version 2 shadows version 1)

``make test`` runs it for PLATEAU_SOAK_SECONDS=70 s of traffic (40 s after full: the rise in MB is asserted);
``make soak`` for 660 s (10.5 minutes after full: the slope in MB/h is asserted, over all of it and over its
second half).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import pytest

from testkit.load import Load
from tests.faults.conftest import (
    AUTH,
    golden_request,
    growth_mb_per_hour,
    mixed_bodies,
    sampling_rss,
    supervised,
    worker_pids,
)
from tests.serving.test_live_server import _call

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

SECONDS = float(os.environ.get("PLATEAU_SOAK_SECONDS", 70))
LONG_SECONDS = 600          # from this length on, the slope after full is asserted
RATE, CLIENTS = 40, 4       # the soak's traffic (test_load_faults.py): 3 valid : 5 invalid, 40 requests/s
WINDOWS, MAX_ROWS, SHADOW_LOG, LABEL_WINDOW_S, TTL_S = 30, 300, 100, 60, 60
BOUNDS = {"SERVING_MONITOR_WINDOW_S": "1", "SERVING_MONITOR_WINDOWS": str(WINDOWS),
          "SERVING_FEEDBACK_MAX_ROWS": str(MAX_ROWS), "SERVING_FEEDBACK_TTL_S": str(TTL_S),
          "SERVING_LABEL_WINDOW_S": str(LABEL_WINDOW_S), "SERVING_SHADOW_LOG_SIZE": str(SHADOW_LOG)}
SAMPLE_EVERY_S = 2


def store_sizes(port: int) -> dict[str, int]:
    """What each bounded store holds now, as the server's own reads say."""
    status, window = _call(port, "GET", "/monitoring/window?since=0", headers=AUTH, timeout=30)
    assert status == 200, window
    versions = window["versions"].values()
    held = window["awaiting_labels"]
    status, shadow = _call(port, "GET", f"/shadow?limit={10 * SHADOW_LOG}", headers=AUTH)
    assert status == 200, shadow
    return {"windows": max(len(v["series"]) for v in versions),
            "label_windows": max(len(v["labels"]) for v in versions),
            "awaiting_rows": held["rows"], "evicted_rows": held["evicted_rows"], "shadow_log": len(shadow["recent"])}


def full(sizes: dict[str, int]) -> bool:
    # A window is kept from its first request on: the newest (current) one may not have begun yet, and a second
    # without any request answered (a stall of the server under a loaded machine) leaves a gap; two allowed.
    return (WINDOWS - 3 <= sizes["windows"] <= WINDOWS and sizes["awaiting_rows"] == MAX_ROWS
            and sizes["evicted_rows"] > 0 and sizes["shadow_log"] == SHADOW_LOG and sizes["label_windows"] >= 1)


class Labeller(threading.Thread):
    """Twice a second: one scored request with a known id, then its label through /feedback (bounded count)."""

    def __init__(self, port: int, body: dict, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.body, self.count = port, body, int(seconds * 2)
        self.stop, self.accepted, self.failed = threading.Event(), 0, []

    def run(self) -> None:
        for n in range(self.count):
            if self.stop.wait(0.5):
                return
            rid = f"plateau-{n}"
            status, _ = _call(self.port, "POST", "/predict", body=self.body, headers={"X-Request-ID": rid})
            answer = _call(self.port, "POST", "/feedback", headers=AUTH,
                           body={"labels": [{"request_id": rid, "label": n % 2}]})
            if status != 200 or answer[0] != 200:
                self.failed.append((status, answer))
            else:
                self.accepted += answer[1]["accepted"]


def _watch(port: int, seconds: float, checks: list) -> None:
    """Every 5 s until ``seconds`` pass: the stores' sizes (and a Prometheus scrape, as a host's is scraped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        checks.append((time.monotonic(), store_sizes(port)))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as scrape:
            assert scrape.status == 200 and scrape.read()
        time.sleep(5)


def _soak(models: dict, tmp_path) -> dict:
    """The server with the short bounds, version 2 shadowing 1, the soak's traffic and the labeller for SECONDS;
    the RSS samples, the stores' sizes over time, the outcomes."""
    with supervised(models, tmp_path, **BOUNDS) as server:
        port = server["port"]
        status, body = _call(port, "POST", f"/load?model_dir={models['model_dir']}&version=2&default=false",
                             headers=AUTH, timeout=120)
        assert status == 200, body
        assert _call(port, "POST", "/split", body={"weights": {}, "shadow": "2"}, headers=AUTH)[0] == 200
        [worker] = worker_pids(server["master"])
        labeller = Labeller(port, json.loads(golden_request(models)), SECONDS)
        checks: list[tuple[float, dict]] = []
        t0 = time.monotonic()
        with sampling_rss(worker, SAMPLE_EVERY_S) as samples:
            with Load(port, mixed_bodies(models), clients=CLIENTS, max_requests=int(SECONDS * RATE / CLIENTS),
                      max_seconds=SECONDS + 30, interval=CLIENTS / RATE) as load:
                labeller.start()
                try:
                    _watch(port, SECONDS - 5, checks)
                finally:
                    outcomes = load.wait()
                    labeller.stop.set()
                    labeller.join(timeout=30)
        return {"t0": t0, "elapsed": time.monotonic() - t0, "samples": samples, "checks": checks,
                "outcomes": outcomes, "labeller": labeller, "health": _call(port, "GET", "/health")[1]}


def _full_from(checks: list[tuple[float, dict]]) -> tuple[float, list[dict]]:
    """When every store was first full, and the sizes read from then on (each asserted full: at the bounds,
    never above, the evictions going on)."""
    full_at = next((t for t, sizes in checks if full(sizes)), None)
    assert full_at is not None, checks[-3:]
    after = [sizes for t, sizes in checks if t >= full_at]
    assert all(full(sizes) and sizes["label_windows"] <= 2 for sizes in after), after
    assert after[-1]["evicted_rows"] > after[0]["evicted_rows"] or len(after) == 1, after
    return full_at, after


def test_memory_levels_off_once_every_bounded_store_is_full(served_models, tmp_path, figure):
    run = _soak(served_models, tmp_path)
    samples, t0, outcomes, labeller = run["samples"], run["t0"], run["outcomes"], run["labeller"]
    full_at, after = _full_from(run["checks"])
    plateau = [kb for t, kb in samples if t >= full_at]
    slope, n = growth_mb_per_hour(samples, full_at)
    post_full_s = samples[-1][0] - full_at
    late_slope, late_n = growth_mb_per_hour(samples, full_at + post_full_s / 2)    # the second half of it
    figure("seconds", round(run["elapsed"]), "s", f"{RATE} requests/s, 3 valid : 5 invalid, + 2 labelled/s, shadow on")
    figure("full_after_s", round(full_at - t0, 1), "s", f"bounds {json.dumps(BOUNDS)}; held {json.dumps(after[0])}")
    figure("post_full_s", round(post_full_s), "s", f"{n} samples, one every {SAMPLE_EVERY_S} s")
    figure("rss_at_full_mb", round(plateau[0] / 1024, 1), "MB")
    figure("rss_end_mb", round(samples[-1][1] / 1024, 1), "MB")
    figure("rss_plateau_max_mb", round(max(plateau) / 1024, 1), "MB")
    figure("slope_after_full_mb_per_hour", round(slope, 2), "MB/h", f"least squares over {n} samples")
    figure("slope_second_half_mb_per_hour", round(late_slope, 2), "MB/h", f"least squares over {late_n} samples")
    print("RSS_SAMPLES", json.dumps([(round(t - t0, 1), kb) for t, kb in samples]))     # shown with -s
    five_xx = [o for o in outcomes if o.status == 0 or o.status >= 500]
    assert five_xx == [] and labeller.failed == [] and run["health"]["status"] == "healthy", (
        five_xx[:5], labeller.failed)
    assert len(outcomes) >= 0.9 * SECONDS * RATE and labeller.accepted >= SECONDS
    if SECONDS >= LONG_SECONDS:
        # Measured over 628 s after full (make soak, two runs, docs/explanation/reliability.md): 1.68 and 2.0 MB/h;
        # over the second half 0.75 and 1.26 MB/h (the goal, under 1 MB/h, is met by one run's second half only).
        # 2x margin on the higher of each.
        assert slope < 4.0 and late_slope < 2.5, samples
    else:
        # Measured: the largest rise within 40 s after full 0.1 MB in two runs and 0.87 MB in a third (a one-off
        # step of ~0.75 MB in the first minute, seen in every run, before or after full); 2x the highest.
        assert (max(plateau) - plateau[0]) / 1024 < 1.75, samples
