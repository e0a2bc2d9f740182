"""Fixtures of the flow tests: a local target on a free port, stopped after the test."""

from __future__ import annotations

import pytest

from tests.net import free_port


@pytest.fixture
def target_env(home, monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_HOME", str(home))
    port = free_port()
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  t1:\n    transport: local\n    base_dir: targets/t1\n    port: {port}\n"
                       f"    start_timeout_s: 120\n")
    yield {"home": home, "port": port, "targets": str(targets)}
    from tasks.targets import load_targets, transport_for

    for target in load_targets(targets, home).values():   # servers the tests start are stopped by the tests
        transport_for(target).host("stop")


def host_status(env, name: str = "t1") -> dict:
    from tasks.targets import load_targets, transport_for

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
