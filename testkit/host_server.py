"""A model server as hosts run it (``python -m serving``: gunicorn's master, N workers, a state file), for
the benchmarks: started on a free 127.0.0.1 port, ready once every worker serves and they agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from testkit.load import request
from testkit.net import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 300


def _health(port: int) -> tuple[int, dict]:
    status, raw = request(port, "GET", "/health", timeout=2)
    return status, json.loads(raw or b"null")


@contextmanager
def host_server(model_dir: Path, version: str, workers: int, run: Path, token: str, code: Path = ROOT):
    """Serve ``model_dir/version`` with ``workers`` processes, the code of ``code`` (another checkout: an
    earlier commit beside this one), run/ files under ``run``; yields its port, master pid and run dir."""
    model_dir, port = model_dir.resolve(), free_port()
    run.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code), "SERVING_MODEL_ROOT": str(model_dir.parent),
           "SERVING_MODEL_DIR": str(model_dir), "SERVING_MODEL_VERSION": version, "SERVING_ADMIN_TOKEN": token,
           "TF_CPP_MIN_LOG_LEVEL": "3", "SERVING_STATE_FILE": str(run / "serving-state.json"),
           "SERVING_WORKERS": str(workers)}
    log = open(run / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
                            cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {(run / 'server.log').read_text()[-800:]}")
            try:
                status, health = _health(port)
                if status == 200 and health["workers"]["count"] == workers and health["workers"]["agree"]:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError(f"server of {code} with {workers} workers not ready after {READY_TIMEOUT_S} s")
        yield {"port": port, "master": proc.pid, "run": run}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
