"""Putting a host back after a failed deploy says what really happened: restored, stopped, or FAILED."""

from __future__ import annotations

import pickle

import pytest

from tasks.deploy import deploy as deploy_mod
from tasks.deploy.deploy import Deployment, Restore, restore
from tasks.deploy.smoke import SmokeReport
from tasks.deploy.targets import Target
from tasks.errors import SmokeTestFailed, TransferError

pytestmark = pytest.mark.unit


class _Host:
    """A transport whose host operations are recorded; the ``broken`` ones raise as an unreachable host does."""

    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.calls: list[tuple[str, ...]] = []

    def host(self, *args: str) -> dict:
        self.calls.append(args)
        if args[0] in self.broken:
            raise TransferError(f"target t1: {args[0]}: host command failed: connection reset")
        return {"ok": True}


@pytest.fixture
def host(monkeypatch):
    fake = _Host()
    monkeypatch.setattr(deploy_mod, "transport_for", lambda target: fake)
    return fake


def _deployment(previous: str | None, action: str) -> Deployment:
    smoke = SmokeReport("t1", "http://127.0.0.1:1", "3", False, ["/predict: golden examples off (injected)"])
    return Deployment("t1", "http://127.0.0.1:1", "3", previous, action, None, smoke)


TARGET = Target(name="t1", base_dir="/nonexistent")


@pytest.mark.parametrize(("previous", "action", "outcome", "call", "said"), [
    ("2", "hot-load", "restored", ("activate", "--version", "2"), "target t1 restored to version 2"),
    (None, "start", "stopped", ("stop",), "target t1 stopped (no server ran there before)"),
])
def test_restore_says_what_it_did(host, previous, action, outcome, call, said):
    done = restore(TARGET, _deployment(previous, action))
    assert done == Restore("t1", outcome, previous) and done.ok and str(done) == said
    assert host.calls == [call]


@pytest.mark.parametrize(("previous", "action", "op"), [("2", "hot-load", "activate"), (None, "start", "stop")])
def test_a_restore_that_fails_says_so_with_the_error(host, previous, action, op):
    host.broken = {op}
    done = restore(TARGET, _deployment(previous, action))
    assert done.outcome == "FAILED" and not done.ok and done.version == previous
    assert "connection reset" in done.error and f"{op}: host command failed" in done.error
    assert str(done).startswith("target t1 could NOT be put back on " + (f"version {previous}" if previous
                                                                          else "no server"))
    assert done.to_dict()["summary"] == str(done)


def test_a_failed_smoke_test_reports_whether_the_host_was_put_back(host, monkeypatch):
    from serving.contract.metadata import ModelMetadata

    monkeypatch.setattr(deploy_mod, "smoke_test", lambda target, url, metadata: SmokeReport(
        target, url, "3", False, ["/predict: golden examples off (injected)"]))
    metadata = ModelMetadata.model_construct(version="3")
    host.broken = {"activate"}
    with pytest.raises(SmokeTestFailed) as failure:
        deploy_mod._smoke_or_restore(TARGET, metadata, "2", "hot-load", None)
    assert failure.value.restore.outcome == "FAILED"
    assert "could NOT be put back on version 2" in str(failure.value) and "injected" in str(failure.value)
    again = pickle.loads(pickle.dumps(failure.value))
    assert str(again) == str(failure.value) and again.restore == failure.value.restore
