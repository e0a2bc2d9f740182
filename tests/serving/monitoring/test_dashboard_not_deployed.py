"""A server that never had a version: its dashboard says "not deployed" instead of a red "unhealthy" (what a
person checking a fresh host should read), and a server that lost its model still shows red."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from serving.monitoring.dashboard import deployed
from testkit.net import free_port
from tests.conftest import ROOT
from tests.serving.test_live_server import _call, _chromium

NOTHING = {"status": "unhealthy", "model_loaded": False, "loaded_versions": [], "warnings": [], "recent_events": []}


@pytest.mark.unit
@pytest.mark.parametrize(("health", "expected"), [
    (NOTHING, False),
    ({**NOTHING, "warnings": ["load of version 3 refused: files differ"]}, True),    # a load was tried
    ({**NOTHING, "recent_events": [{"event": "unload", "version": "2"}]}, True),
    ({**NOTHING, "status": "healthy", "model_loaded": True, "loaded_versions": ["1"]}, True),
])
def test_a_server_is_deployed_once_a_version_was_loaded_or_tried(health, expected):
    assert deployed(health) is expected


@pytest.mark.integration
def test_the_dashboard_of_a_server_with_nothing_loaded_says_not_deployed(tmp_path):
    port = free_port()
    env = {**os.environ, "SERVING_ADMIN_TOKEN": "t", "TF_CPP_MIN_LOG_LEVEL": "3"}
    for key in ("SERVING_MODEL_DIR", "SERVING_MODEL_VERSION", "SERVING_MODEL_ROOT", "SERVING_STATE_FILE"):
        env.pop(key, None)
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.api.app:app", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-access-log"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    status, health = _call(port, "GET", "/health", timeout=2)
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                    time.sleep(0.2)
            assert status == 503 and health["reasons"] == ["no model loaded"]     # /health itself is unchanged
            assert _call(port, "GET", "/monitoring/summary")[1]["deployed"] is False
            dom = _chromium(tmp_path, f"http://127.0.0.1:{port}/dashboard", "--dump-dom")
            assert dom.returncode == 0, dom.stderr[-2000:]
            assert "— not deployed" in dom.stdout and "no version deployed to this server yet" in dom.stdout
            assert "✗ unhealthy" not in dom.stdout
        finally:
            proc.terminate()
            proc.wait(timeout=30)
