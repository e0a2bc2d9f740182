"""Promotion with approval, rejection and timeout; the monitor flow; keyed artifacts — on a real
(temporary) Prefect server, a real MLflow store and a real serving process."""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.constants import ALARM_CRITICAL, ALARM_PAGE
from tasks.errors import ReleaseError
from tests.conftest import ROOT, mlflow_client
from tests.flows.conftest import Steps, host_status, scenario_home, wait_for_event
from tests.flows.conftest import artifacts as _artifacts

pytestmark = pytest.mark.integration


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


class Promotions(Steps):
    """Version 1 released and deployed, version 2 released without a deploy, then promotions of 2:
    rejected, timed out, stale, approved; then the monitor (see ``Steps``)."""

    STEPS = ("releases", "rejected", "timed_out", "stale", "approved", "monitor_ok", "monitor_probe_fails",
             "monitor_down")

    def __init__(self, env: dict, data: Path, config: Path) -> None:
        super().__init__()
        self.env, self.data, self.config = env, data, config
        self.client = mlflow_client(env["home"])[0]
        self.started = datetime.now(UTC)
        # The temporary server is shared with other tests: count this module's artifacts from here.
        self.before = {k: len(_artifacts(f"{k}-test-model")) for k in ARTIFACT_KINDS}
        self.states: dict[str, str] = {}      # step → the name of the state its flow run ended in

    def ended(self, flow, **params):
        """Run ``flow`` as the CLI does, but keep the name of the state its run ended in."""
        state = flow(**params, return_state=True)
        self.states[self.current] = state.name
        return state.result()

    def new_artifacts(self, kind: str) -> list:
        found = _artifacts(f"{kind}-test-model")
        return found[: len(found) - self.before[kind]]

    def promote(self, timeout_s: int = 120):
        from flows.promote import promote_flow

        return self.ended(promote_flow, targets=["t1"], targets_file=self.env["targets"], config=str(self.config),
                          approval_timeout_s=timeout_s, poll_interval_s=1)

    def observed(self) -> dict:
        """The champion, the challenger, version 2's audit tags and what the host serves, now."""
        from mlflow.exceptions import MlflowException

        def alias(name: str) -> str | None:
            try:
                return str(self.client.get_model_version_by_alias("test-model", name).version)
            except MlflowException:   # the alias is not set (a promotion clears the challenger)
                return None

        return {"champion": alias("champion"), "challenger": alias("challenger"),
                "v2_tags": dict(self.client.get_model_version("test-model", "2").tags),
                "served": host_status(self.env)["default_version"]}

    def monitor(self):
        from flows.monitor import monitor_flow

        return self.ended(monitor_flow, targets_file=self.env["targets"], config=str(self.config))

    def _releases(self, patch):
        schema, features = ROOT / "configs" / "schema.yaml", ROOT / "configs" / "feature_list.csv"
        first = _release(self.env, self.data, schema, features, self.config, ["t1"])
        second = _release(self.env, self.data, schema, features, self.config, [])
        return {"first": first, "second": second, "served": host_status(self.env)["default_version"]}

    def _rejected(self, patch):
        # What the new UI sends for a form whose Approve switch was left as it appeared: no "approve" at all.
        watcher = _resume_when_paused({"approver": "bob@example.com", "reason": "wait for Q3 data"})
        return {"result": self.promote(), "watcher": watcher, **self.observed()}

    def _timed_out(self, patch):
        _resume_when_paused(None, deadline_s=20)
        with pytest.raises(ReleaseError) as failure:
            self.promote(timeout_s=2)
        return {"error": failure.value, **self.observed()}

    def _stale(self, patch):
        """Approved, but the champion moved while the run waited (someone set it to 2 by hand)."""
        def someone_promotes_2():
            self.client.set_registered_model_alias("test-model", "champion", "2")

        _resume_when_paused({"approve": True, "approver": "carol@example.com", "reason": "looks fine"},
                            before_resume=someone_promotes_2)
        with pytest.raises(ReleaseError) as failure:
            self.promote()
        self.client.set_registered_model_alias("test-model", "champion", "1")
        return {"error": failure.value, **self.observed()}

    def _approved(self, patch):
        _resume_when_paused({"approve": True, "approver": "alice@example.com", "reason": "better AUC"})
        return {"result": self.promote(), **self.observed()}

    def _monitor_ok(self, patch):
        return self.monitor()

    def _monitor_probe_fails(self, patch):
        import tasks.monitoring.probe
        from tasks.deploy.smoke import SmokeReport

        patch.setattr(tasks.monitoring.probe, "smoke_test", lambda target, url, metadata: SmokeReport(
            target, url, metadata.version, False, ["/predict: golden examples off by 2.0e-01 (injected)"]))
        return self.monitor()

    def _monitor_down(self, patch):
        from tasks.deploy.targets import load_targets
        from tasks.deploy.transports import transport_for

        transport_for(load_targets(self.env["targets"], self.env["home"])["t1"]).host("stop")
        return self.monitor()


ARTIFACT_KINDS = ("promotion-comparison", "release-report", "promotion-decision", "monitor")


@pytest.fixture(scope="module")
def promotions(prefect_server, tmp_path_factory, demo_frame):
    with scenario_home(tmp_path_factory, demo_frame, "promotions") as (env, data, config):
        yield Promotions(env, data, config)


def test_releases_leave_version_2_as_the_challenger(promotions):
    releases = promotions.at("releases")
    assert releases["first"]["deploy"]["champion_after"] == "1"
    assert releases["second"]["registry"]["alias"] == "challenger" and "deploy" not in releases["second"]


def test_a_rejection_changes_nothing(promotions):
    """Rejected by leaving Approve as the form shows it (no value sent): nothing changes — host, aliases, tags."""
    rejected = promotions.at("rejected")
    assert rejected["watcher"]["input_schema_saved"]
    assert rejected["result"]["decision"] == "rejected" and rejected["result"]["version"] == "2"
    assert rejected["champion"] == "1" and rejected["challenger"] == "2"
    assert not any(k.startswith(("approval_", "promoted_")) for k in rejected["v2_tags"])
    assert rejected["served"] == promotions.at("releases")["served"]


def test_no_answer_within_the_timeout_fails_and_changes_nothing(promotions):
    timed_out = promotions.at("timed_out")
    assert "no approval for version 2 within 2 s" in str(timed_out["error"])
    assert timed_out["champion"] == "1"


def test_an_approval_of_a_stale_comparison_is_not_carried_out(promotions):
    """The approval answered a comparison with champion 1; the champion moved to 2 while the run waited."""
    stale = promotions.at("stale")
    assert "answered a comparison with champion 1, but the champion is now 2" in str(stale["error"])
    assert not any(k.startswith(("approval_", "promoted_")) for k in stale["v2_tags"])
    assert stale["served"] == promotions.at("releases")["served"]


def test_an_approval_deploys_promotes_and_records_the_approver(promotions):
    approved = promotions.at("approved")
    result = approved["result"]
    assert result["decision"] == "approved" and result["deploy"]["champion_after"] == "2"
    assert all(c["passed"] for c in result["deploy"]["post_promotion_checks"])
    tags = approved["v2_tags"]
    assert tags["approval_approver"] == "alice@example.com" and tags["approval_reason"] == "better AUC"
    assert tags["promoted_reason"] == "approved by alice@example.com: better AUC" and tags["previous_champion"] == "1"
    assert approved["served"] == promotions.at("releases")["second"]["version"]


def test_the_comparison_sets_the_versions_side_by_side(promotions):
    comparison = promotions.at("approved")["result"]["comparison"]
    assert comparison["champion"]["version"] == "1" and comparison["candidate"]["version"] == "2"
    assert {m["metric"] for m in comparison["metrics"]} >= {"roc_auc", "brier", "ece"}
    # Same data for both versions: every PSI is small (not exactly 0: each version draws its own quantiles).
    assert comparison["psi"] and max(comparison["psi"].values()) < 0.1


def test_keyed_artifacts_keep_every_report(promotions):
    """Four comparisons, two releases, four decisions, newest first."""
    promotions.at("approved")
    history = promotions.new_artifacts("promotion-comparison")
    assert len(history) == 4 and "| roc_auc |" in history[0].data and "PSI" in history[0].data
    releases = promotions.new_artifacts("release-report")
    assert len(releases) == 2
    text = "\n".join(a.data for a in releases)
    assert "quality gate: **passed**" in text and "| train |" in text and "golden max abs Δp" in text
    assert "mlflow ui --backend-store-uri" in text
    decisions = [a.data.splitlines()[0] for a in promotions.new_artifacts("promotion-decision")]
    assert [d.split(":")[0] for d in decisions] == ["# Approved", "# Stale", "# Timed out", "# Rejected"], decisions


def test_the_monitor_finds_the_champion_well(promotions):
    ok = promotions.at("monitor_ok")
    assert ok["champion"] == "2" and [f["alarm"] for f in ok["findings"]] == [None]


def test_a_champion_failing_its_probe_is_a_critical_alarm_on_the_server(promotions):
    """The event reaches the Prefect server, where the rollback deployment's trigger waits for it."""
    bad = promotions.at("monitor_probe_fails")
    assert [f["alarm"] for f in bad["findings"]] == [ALARM_CRITICAL] and "injected" in bad["findings"][0]["finding"]
    event = wait_for_event(ALARM_CRITICAL, since=promotions.started, version="2", target="t1")
    assert event["resource"]["prefect.resource.id"] == "pipeline.target.t1" and "injected" in event["payload"]["reason"]


def test_a_server_that_is_down_pages_a_person_and_does_not_roll_back(promotions):
    """Critical, as the guide's "Health Status" row says, but not a rollback: another model version
    would not bring the server back."""
    down = promotions.at("monitor_down")
    assert [f["alarm"] for f in down["findings"]] == [ALARM_PAGE]
    assert [(c["rule"], c["level"], c["event"]) for c in down["transitions"] if c["state"] == "firing"] == \
        [("health", "critical", ALARM_PAGE)]
    assert "no server running" in down["findings"][0]["finding"]
    assert len(promotions.new_artifacts("monitor")) == 3


def test_each_run_ends_in_a_state_named_by_its_outcome(promotions):
    """The runs list tells the outcomes apart; each failure's message is the error's first line."""
    promotions.at("monitor_down")
    assert promotions.states == {"rejected": "Rejected", "timed_out": "TimedOut", "stale": "StaleApproval",
                                 "approved": "Approved", "monitor_ok": "AllClear",
                                 "monitor_probe_fails": "Alarming", "monitor_down": "Alarming"}


def test_promote_refuses_a_version_that_failed_the_gate(prefect_server, target_env, demo_csv, schema_path,
                                                        feature_list_path, fast_config):
    from flows.promote import promote_flow

    strict = fast_config.parent / "strict.yaml"
    strict.write_text(fast_config.read_text().replace("roc_auc: {min: 0.6}", "roc_auc: {min: 0.999}"))
    failed = _release(target_env, demo_csv, schema_path, feature_list_path, strict, [])
    assert not failed["gate"]["passed"]
    with pytest.raises(ReleaseError, match="version 1 of 'test-model' did not pass the quality gate"):
        promote_flow(version="1", targets=["t1"], targets_file=target_env["targets"], config=str(strict))


def test_the_approval_form_rejects_unless_approve_is_switched_on():
    """Who and why are required; the decision is not: a form sent as it appeared (the new UI sends no value
    for an untouched switch) is a rejection, never a validation error that leaves the run paused."""
    from flows.promote import Approval

    schema = Approval.model_json_schema()
    assert set(schema["required"]) == {"approver", "reason"}
    assert schema["properties"]["approve"]["default"] is False
    assert Approval(approver="bob", reason="not now").approve is False


