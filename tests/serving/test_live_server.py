"""The server as operators start it: a real `uvicorn serving.api.app:app` process on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from testkit.net import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

TOKEN = "live-token"



def _call(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture
def live_server(served_models, tmp_path):
    port = free_port()
    env = {**os.environ, "SERVING_MODEL_ROOT": str(served_models["root"]),
           "SERVING_MODEL_DIR": str(served_models["model_dir"]), "SERVING_MODEL_VERSION": "1",
           "SERVING_ADMIN_TOKEN": TOKEN, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.api.app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--no-access-log"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _call(port, "GET", "/health", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not become healthy:\n" + (tmp_path / "server.log").read_text())
    yield port
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.mark.faults
def test_hot_swaps_under_load_drop_no_request(live_server, served_models):
    port = live_server
    golden = json.loads((served_models["model_dir"] / "1" / "metadata.json").read_text())["golden_examples"]
    body = json.dumps({"features": [golden[0]["features"]]}).encode()
    stop = threading.Event()
    results: list[list[tuple[int, str]]] = [[] for _ in range(8)]

    def client(out):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 90
        for _ in range(5000):                     # bounded in count and in time
            if stop.is_set() or time.monotonic() > deadline:
                break
            try:
                conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
                resp = conn.getresponse()
                payload = json.loads(resp.read())
                out.append((resp.status, payload.get("model_version", "")))
            except (OSError, http.client.HTTPException) as exc:
                out.append((0, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=client, args=(results[i],)) for i in range(8)]
    for t in threads:
        t.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    model_dir = str(served_models["model_dir"])
    steps = [("POST", f"/load?model_dir={model_dir}&version=2"), ("POST", "/default?version=1"),
             ("POST", "/default?version=2"), ("POST", f"/load?model_dir={model_dir}&version=1"),
             ("POST", "/unload?version=2")]
    try:
        time.sleep(0.5)
        for method, path in steps:
            status, payload = _call(port, method, path, headers=auth, timeout=120)
            assert status == 200, (path, payload)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    flat = [r for rs in results for r in rs]
    failures = [r for r in flat if r[0] != 200]
    assert len(flat) > 200
    assert failures == []
    assert {v for _s, v in flat} == {"1", "2"}
    assert _call(port, "GET", "/health")[1]["loaded_versions"] == ["1"]


def test_python_dash_m_serving_help():
    out = subprocess.run([sys.executable, "-m", "serving", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--model-root" in out.stdout and "SERVING_ADMIN_TOKEN" in out.stdout


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000", "--window-size=1280,900")


def _chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    import shutil

    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed; `make test` installs Debian's chromium")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", *args, url],
                          capture_output=True, text=True, timeout=120)


def test_the_dashboard_shows_live_numbers_in_chromium(live_server, served_models, tmp_path):
    port = live_server
    golden = json.loads((served_models["model_dir"] / "1" / "metadata.json").read_text())["golden_examples"]
    rows = [g["features"] for g in golden]
    ids = []
    for _ in range(20):                                   # 240 rows: enough for PSI
        status, body = _call(port, "POST", "/predict", {"features": rows})
        assert status == 200
        ids.append(body["request_id"])
    assert _call(port, "POST", "/predict", {"features": [{"nope": 1}]})[0] == 422
    labels = [{"request_id": rid, "row": i, "label": i % 2} for rid in ids for i in range(len(rows))]
    assert _call(port, "POST", "/feedback", {"labels": labels},
                 {"Authorization": f"Bearer {TOKEN}"})[1]["accepted"] == len(labels)
    summary = _call(port, "GET", "/monitoring/summary")[1]
    current = summary["current"]
    assert current["requests"] == 21 and current["labels"]["n"] == len(labels) and current["psi_max"] is not None

    url = f"http://127.0.0.1:{port}/dashboard"
    dom = _chromium(tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-loaded="yes"' in html, html[-3000:]
    assert "✓ Healthy" in html and "Loaded: version 1" in html
    assert current["requests_per_minute"] == pytest.approx(21 / 5)      # the last five minutes
    assert f"Current: {current['requests_per_minute']:.1f} req/min" in html
    assert f"P95 {current['latency_ms']['p95']:.1f}" in html
    assert f"{current['labels']['ece']:.3f}" in html and f"{current['psi_max']:.3f}" in html
    assert "<polyline" in html                             # the charts were drawn
    shot = tmp_path / "dashboard.png"
    taken = _chromium(tmp_path, url, f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    print(f"dashboard screenshot: {shot}")
