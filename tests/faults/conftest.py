"""Helpers of the fault-injection suite (``pytest -m faults``; the ``figure`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from serving.contract.processes import alive, children, rss_bytes
from testkit.net import free_port
from tests.conftest import ROOT

TOKEN = "fault-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def worker_pids(master: int) -> list[int]:
    """The server processes gunicorn's master runs (its children)."""
    return children(master)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def supervised(models: dict, tmp_path: Path, workers: int = 1, **env_extra: str):
    """``python -m serving`` as hosts run it (gunicorn master + ``workers`` workers), serving version 1 of
    ``models``; ready once every worker serves."""
    from tests.serving.test_live_server import _call

    port = free_port()
    state = tmp_path / "run" / "serving-state.json"
    env = {**os.environ, "SERVING_MODEL_ROOT": str(models["root"]),
           "SERVING_MODEL_DIR": str(models["model_dir"]), "SERVING_MODEL_VERSION": "1",
           "SERVING_ADMIN_TOKEN": TOKEN, "SERVING_STATE_FILE": str(state), "TF_CPP_MIN_LOG_LEVEL": "3",
           "SERVING_WORKERS": str(workers), **env_extra}
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy():
        assert proc.poll() is None, log_path.read_text()
        try:
            status, health = _call(port, "GET", "/health", timeout=2)
        except OSError:
            return False
        return status == 200 and health["workers"]["count"] == workers and health["workers"]["agree"]

    try:
        wait_until(healthy, 120, "the supervised server to become healthy", interval=0.2)
        yield {"port": port, "master": proc.pid, "state": state, "log": log_path, "proc": proc}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def supervised_server(served_models, tmp_path):
    with supervised(served_models, tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def three_models(tmp_path_factory, demo_frame):
    """Three exported versions (seeds 7, 8, 9) under a model root: root/models/test-model/{1,2,3}."""
    from tests.conftest import train_and_export

    root = tmp_path_factory.mktemp("three")
    train_and_export(root, demo_frame, seeds=(7, 8, 9))
    return {"root": root / "models", "model_dir": root / "models" / "test-model"}


def golden_request(models: dict, version: str = "1") -> bytes:
    golden = json.loads((models["model_dir"] / version / "metadata.json").read_text())["golden_examples"]
    return json.dumps({"features": [golden[0]["features"]]}).encode()


def rss_kb(pid: int) -> int:
    """The process's resident memory in KiB."""
    if not alive(pid):
        raise AssertionError(f"no process {pid}")
    return rss_bytes([pid]) // 1024


def mixed_bodies(models: dict) -> list[bytes]:
    """The soaks' traffic: 3 valid requests to 5 invalid ones (wrong type, not JSON, empty, a 20 KB string)."""
    good = golden_request(models)
    bad = [b'{"features": [{"age": "forty"}]}', b'{"features": "nope"}', b"not json", b'{"features": []}',
           json.dumps({"features": [{"x": "y" * 20_000}]}).encode()]
    return [good, good, good] + bad


@contextmanager
def sampling_rss(pid: int, every: float = 5.0):
    """Samples (monotonic time, RSS in KiB) of ``pid`` every ``every`` seconds, in the list yielded, until the
    block ends."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            samples.append((time.monotonic(), rss_kb(pid)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


def growth_mb_per_hour(samples: list[tuple[float, int]], after: float) -> tuple[float, int]:
    """The RSS growth in MB/h: the slope of a least-squares line through the samples taken at or after
    ``after`` (monotonic time), and how many samples it used."""
    steady = [(t, kb) for t, kb in samples if t >= after]
    n = len(steady)
    if n < 2:
        raise AssertionError(f"{n} RSS sample(s) after {after:.0f}: too few for a slope")
    mean_t, mean_kb = sum(t for t, _ in steady) / n, sum(kb for _, kb in steady) / n
    var = sum((t - mean_t) ** 2 for t, _ in steady) or 1.0
    slope_kb_s = sum((t - mean_t) * (kb - mean_kb) for t, kb in steady) / var
    return slope_kb_s * 3600 / 1024, n
