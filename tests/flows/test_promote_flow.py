"""Promotion with approval, rejection and timeout; the monitor flow; keyed artifacts — on a real
(temporary) Prefect server, a real MLflow store and a real serving process."""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import UTC, datetime

import pytest

from tasks.errors import ReleaseError
from tests.conftest import mlflow_client
from tests.flows.conftest import artifacts as _artifacts
from tests.flows.conftest import host_status, wait_for_event


def _release(env, demo_csv, schema_path, feature_list_path, fast_config, targets):
    from flows.release import release_flow

    return release_flow(data=str(demo_csv), schema=str(schema_path), feature_list=str(feature_list_path),
                        config=str(fast_config), targets=targets, targets_file=env["targets"])


def _resume_when_paused(run_input: dict | None, deadline_s: float = 120, before_resume=None) -> dict:
    """Resume the next paused ``promote`` run with ``run_input`` (None: never resume), from a thread;
    ``before_resume`` runs first (what happens elsewhere while the run waits)."""
    from prefect import resume_flow_run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    seen: dict = {}

    def watch():
        with get_client(sync_client=True) as client:
            end = time.monotonic() + deadline_s
            while time.monotonic() < end and "id" not in seen:
                paused = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
                for run in paused:
                    seen["id"] = run.id
                    seen["input_schema_saved"] = bool(run.state.state_details.run_input_keyset)
                    if before_resume is not None:
                        before_resume()
                    if run_input is not None:
                        resume_flow_run(run.id, run_input=run_input)
                time.sleep(0.5)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(watch,), daemon=True)
    thread.start()
    seen["thread"] = thread
    return seen


def test_promote_with_approval_rejection_and_timeout(prefect_server, target_env, demo_csv, schema_path,
                                                     feature_list_path, fast_config):
    from flows.monitor import monitor_flow
    from flows.promote import promote_flow
    from tasks.alarms import CRITICAL, WARNING

    env = target_env
    started = datetime.now(UTC)
    # The temporary server is shared with other tests: count this test's artifacts from here.
    keys = ("promotion-comparison", "release-report", "promotion-decision", "monitor")
    before = {k: len(_artifacts(f"{k}-test-model")) for k in keys}

    def new_artifacts(kind: str) -> list:
        found = _artifacts(f"{kind}-test-model")
        return found[: len(found) - before[kind]]

    first = _release(env, demo_csv, schema_path, feature_list_path, fast_config, ["t1"])
    assert first["deploy"]["champion_after"] == "1"
    second = _release(env, demo_csv, schema_path, feature_list_path, fast_config, [])
    assert second["registry"]["alias"] == "challenger" and "deploy" not in second
    client = mlflow_client(env["home"])[0]
    served_before = host_status(env)["default_version"]

    def promote(timeout_s: int = 120):
        return promote_flow(targets=["t1"], targets_file=env["targets"], config=str(fast_config),
                            approval_timeout_s=timeout_s, poll_interval_s=1)

    # Rejected: nothing changes — host, aliases, tags.
    watcher = _resume_when_paused({"approve": False, "approver": "bob@example.com", "reason": "wait for Q3 data"})
    rejected = promote()
    assert watcher["input_schema_saved"]
    assert rejected["decision"] == "rejected" and rejected["version"] == "2"
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("test-model", "challenger").version) == "2"
    assert not any(k.startswith(("approval_", "promoted_")) for k in client.get_model_version("test-model", "2").tags)
    assert host_status(env)["default_version"] == served_before

    # No answer within the timeout: the run fails with a clear message, nothing changes.
    watcher = _resume_when_paused(None, deadline_s=20)
    with pytest.raises(ReleaseError, match="no approval for version 2 within 2 s"):
        promote(timeout_s=2)
    assert str(client.get_model_version_by_alias("test-model", "champion").version) == "1"

    # Approved, but the champion moved while the run waited (here: someone set it to 2 by hand): the
    # approval answered a comparison with champion 1, so it is not carried out.
    def someone_promotes_2():
        client.set_registered_model_alias("test-model", "champion", "2")

    watcher = _resume_when_paused({"approve": True, "approver": "carol@example.com", "reason": "looks fine"},
                                  before_resume=someone_promotes_2)
    with pytest.raises(ReleaseError, match="answered a comparison with champion 1, but the champion is now 2"):
        promote()
    client.set_registered_model_alias("test-model", "champion", "1")
    assert not any(k.startswith(("approval_", "promoted_")) for k in client.get_model_version("test-model", "2").tags)
    assert host_status(env)["default_version"] == served_before

    # Approved: deployed, smoke-tested, promoted; approver and reason on the version.
    watcher = _resume_when_paused({"approve": True, "approver": "alice@example.com", "reason": "better AUC"})
    approved = promote()
    assert approved["decision"] == "approved" and approved["deploy"]["champion_after"] == "2"
    assert all(c["passed"] for c in approved["deploy"]["post_promotion_checks"])
    tags = client.get_model_version("test-model", "2").tags
    assert tags["approval_approver"] == "alice@example.com" and tags["approval_reason"] == "better AUC"
    assert tags["promoted_reason"] == "approved by alice@example.com: better AUC" and tags["previous_champion"] == "1"
    assert host_status(env)["default_version"] == second["version"]
    comparison = approved["comparison"]
    assert comparison["champion"]["version"] == "1" and comparison["candidate"]["version"] == "2"
    assert {m["metric"] for m in comparison["metrics"]} >= {"roc_auc", "brier", "ece"}
    # Same data for both versions: every PSI is small (not exactly 0: each version draws its own quantiles).
    assert comparison["psi"] and max(comparison["psi"].values()) < 0.1

    # Keyed artifacts keep their history: four comparisons, two releases, four decisions.
    history = new_artifacts("promotion-comparison")
    assert len(history) == 4 and "| roc_auc |" in history[0].data and "PSI" in history[0].data
    releases = new_artifacts("release-report")
    assert len(releases) == 2
    text = "\n".join(a.data for a in releases)
    assert "quality gate: **passed**" in text and "| train |" in text and "golden max abs Δp" in text
    assert "mlflow ui --backend-store-uri" in text
    decisions = [a.data.splitlines()[0] for a in new_artifacts("promotion-decision")]
    assert [d.split(":")[0] for d in decisions] == ["# Approved", "# Stale", "# Timed out", "# Rejected"], decisions

    # The monitor: all well, then the server is gone (a warning for a person, not a rollback).
    ok = monitor_flow(targets_file=env["targets"], config=str(fast_config))
    assert ok["champion"] == "2" and [f["alarm"] for f in ok["findings"]] == [None]
    # A served champion failing its probe is critical: the event reaches the server, for the rollback trigger.
    import flows.monitor
    from tasks.smoke import SmokeReport

    real_probe = flows.monitor.smoke_test
    flows.monitor.smoke_test = lambda target, url, metadata: SmokeReport(
        target, url, metadata.version, False, ["/predict: golden examples off by 2.0e-01 (injected)"])
    try:
        bad = monitor_flow(targets_file=env["targets"], config=str(fast_config))
    finally:
        flows.monitor.smoke_test = real_probe
    assert [f["alarm"] for f in bad["findings"]] == [CRITICAL] and "injected" in bad["findings"][0]["finding"]
    event = wait_for_event(CRITICAL, since=started, version="2", target="t1")
    assert event["resource"]["prefect.resource.id"] == "pipeline.target.t1" and "injected" in event["payload"]["reason"]

    from tasks.targets import load_targets, transport_for

    transport_for(load_targets(env["targets"], env["home"])["t1"]).host("stop")
    down = monitor_flow(targets_file=env["targets"], config=str(fast_config))
    assert [f["alarm"] for f in down["findings"]] == [WARNING] and "no server running" in down["findings"][0]["finding"]
    assert len(new_artifacts("monitor")) == 3


def test_promote_refuses_a_version_that_failed_the_gate(prefect_server, target_env, demo_csv, schema_path,
                                                        feature_list_path, fast_config):
    from flows.promote import promote_flow

    strict = fast_config.parent / "strict.yaml"
    strict.write_text(fast_config.read_text().replace("roc_auc: {min: 0.6}", "roc_auc: {min: 0.999}"))
    failed = _release(target_env, demo_csv, schema_path, feature_list_path, strict, [])
    assert not failed["gate"]["passed"]
    with pytest.raises(ReleaseError, match="version 1 of 'test-model' did not pass the quality gate"):
        promote_flow(version="1", targets=["t1"], targets_file=target_env["targets"], config=str(strict))
