"""Fixtures of the flow tests: a local target on a free port, stopped after the test."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.net import free_port


@contextmanager
def local_target(home: Path, base: Path, monkeypatch):
    """A pipeline home and a targets file with one local target t1 on a free port; its server is stopped after."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PIPELINE_HOME", str(home))
    port = free_port()
    targets = base / "targets.yaml"
    targets.write_text(f"targets:\n  t1:\n    transport: local\n    base_dir: targets/t1\n    port: {port}\n"
                       f"    start_timeout_s: 120\n")
    try:
        yield {"home": home, "port": port, "targets": str(targets)}
    finally:
        from tasks.deploy.targets import load_targets
        from tasks.deploy.transports import transport_for

        for target in load_targets(targets, home).values():   # servers the tests start are stopped by the tests
            transport_for(target).host("stop")


class Steps:
    """A scenario on shared state, built step by step, each step at most once per module.

    A test asks for the step whose outcome it checks (``scenario.at("rollback")``); the steps before it
    run first, so every test also runs alone (``-k``), and a failure names the behaviour that broke.
    A step records what it observed at its moment (the host's version, the champion), since later
    steps change both. Subclasses list ``STEPS`` and define ``_<step>(patch)``; ``patch`` is a
    MonkeyPatch undone when the step ends.
    """

    STEPS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.failed: dict[str, BaseException] = {}
        self.current: str | None = None      # the step running now

    def at(self, step: str):
        for name in self.STEPS[: self.STEPS.index(step) + 1]:
            if name in self.failed:
                pytest.fail(f"needs step '{name}', which failed: {self.failed[name]!r}")
            if name not in self.results:
                self.current = name
                try:
                    with pytest.MonkeyPatch.context() as patch:
                        self.results[name] = getattr(self, f"_{name}")(patch)
                except BaseException as exc:
                    self.failed[name] = exc
                    raise
        return self.results[step]


@contextmanager
def scenario_home(tmp_path_factory, demo_frame, name: str):
    """For a module's scenario: the demo data, the fast config and a local target t1 under a fresh home."""
    from tests.conftest import FAST_CONFIG

    base = tmp_path_factory.mktemp(name)
    data = base / "demo.csv"
    demo_frame.to_csv(data, index=False)
    config = base / "pipeline.yaml"
    config.write_text(FAST_CONFIG)
    with pytest.MonkeyPatch.context() as patch, local_target(base / "home", base, patch) as env:
        yield env, data, config


@pytest.fixture
def target_env(home, monkeypatch, tmp_path):
    with local_target(home, tmp_path, monkeypatch) as env:
        yield env


def host_status(env, name: str = "t1") -> dict:
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    return transport_for(load_targets(env["targets"], env["home"])[name]).host("status")


def artifacts(key: str) -> list:
    """The Prefect artifacts with ``key`` on the current server, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:   # newest first
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


def wait_for_event(name: str, since, timeout_s: float = 60, **payload) -> dict:
    """The first event called ``name`` on the current Prefect server that occurred after ``since`` (a UTC
    datetime) with ``payload`` in its payload (events are stored asynchronously, so this polls)."""
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        resp = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", timeout=10, json={
            "filter": {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}}, "limit": 50})
        resp.raise_for_status()
        for event in resp.json()["events"]:
            if all(event["payload"].get(k) == v for k, v in payload.items()):
                return event
        time.sleep(0.5)
    pytest.fail(f"no {name} event with payload {payload} since {since} reached the server within {timeout_s} s")
