"""The named states runs end in (flows/outcomes.py), without a Prefect server: the decorator returns the
state it would hand Prefect. tests/flows/test_promote_flow.py checks the names real runs end in."""

from __future__ import annotations

import inspect

import pytest

from flows import outcomes
from tasks import errors

pytestmark = pytest.mark.unit


def _error_classes() -> list[type]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, errors.ReleaseError) and c is not errors.ReleaseError]


def test_every_release_error_ends_in_a_documented_failed_state():
    for cls in _error_classes():
        name = outcomes.state_name(cls.__new__(cls))
        assert name != "Failed", f"{cls.__name__} has no named state in STATE_NAMES"
        assert outcomes.OUTCOMES[name][0] == "FAILED", (cls.__name__, name)


def test_an_unlisted_subclass_takes_its_parents_name_and_anything_else_is_plain_failed():
    class Sub(errors.TransferError):
        pass

    assert outcomes.state_name(Sub("x")) == "TransferFailed"
    assert outcomes.state_name(errors.ReleaseError("x")) == "Failed"


def test_a_summary_ends_in_its_named_completed_state_and_keeps_its_data():
    flow_fn = outcomes.ends_in(lambda s: ("Rejected", f"rejected v{s['version']}\nsecond line"))(
        lambda version: {"version": version})
    state = flow_fn("3")
    assert (state.name, state.type.value, state.message) == ("Rejected", "COMPLETED", "rejected v3")
    assert state.data == {"version": "3"}


def test_a_release_error_ends_in_a_named_failed_state_carrying_the_error():
    def flow_fn():
        raise errors.FleetHalted("fleet web: staging version 4 failed on web-2\n  - details")

    state = outcomes.ends_in(lambda s: ("Released", ""))(flow_fn)()
    assert (state.name, state.type.value) == ("FleetHalted", "FAILED")
    assert state.message == "fleet web: staging version 4 failed on web-2"
    assert isinstance(state.data, errors.FleetHalted)


def test_other_exceptions_are_left_to_prefect():
    def flow_fn():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        outcomes.ends_in(lambda s: ("Released", ""))(flow_fn)()


@pytest.mark.parametrize(("summary", "name"), [
    ({"registry": {"version": "2"}, "gate": {"passed": False, "reasons": ["roc_auc 0.61 is below 0.70"]}},
     "GatedOut"),
    ({"registry": {"version": "2"}, "gate": {"passed": True, "reasons": []}}, "Blessed"),
    ({"registry": {"version": "2"}, "gate": {"passed": True, "reasons": []}, "deploy": {"champion_after": "2"}},
     "Released"),
])
def test_a_release_is_named_by_its_gate_and_deploy(summary, name):
    assert outcomes.version_outcome(summary)[0] == name


def test_the_names_the_flows_give_are_all_documented_completed_states():
    named = [outcomes.version_outcome({"registry": {"version": "1"}, "gate": {"passed": False, "reasons": ["r"]}}),
             outcomes.deploy_outcome({"registry_version": "1", "deployments": [{"target": "web-1"}]}),
             outcomes.promote_outcome({"version": "2", "approver": "a", "reason": "r", "decision": "rejected"}),
             outcomes.promote_outcome({"version": "2", "approver": "a", "reason": "r", "decision": "approved",
                                       "comparison": {"champion": {"version": "1"}}}),
             *[outcomes.rollback_outcome({"action": a, "target": "t1", "champion_before": "2",
                                          "champion_after": "1", "reason": "alarm"})
               for a in ("rolled back", "aligned", "skipped")],
             outcomes.monitor_outcome({"firing": [], "targets": [{}]}),
             outcomes.monitor_outcome({"firing": ["t1/2/ece"], "targets": [{}]}),
             outcomes.health_outcome({"targets": {"a": {"status": "healthy", "alarm": None},
                                                  "b": {"status": "not deployed", "alarm": None}}}),
             outcomes.health_outcome({"targets": {"a": {"status": "unreachable", "alarm": "refused"}}})]
    assert [n for n, _ in named] == ["GatedOut", "Promoted", "Rejected", "Approved", "RolledBack", "Aligned",
                                     "NothingToDo", "AllClear", "Alarming", "Healthy", "Down"]
    assert all(outcomes.OUTCOMES[n][0] == "COMPLETED" for n, _ in named)
    assert named[3][1] == "approved v2 by a: r; champion 1 -> 2"
    assert named[0][1] == "v1 refused by the gate: r"
    assert named[-2][1] == "1 healthy, 1 not deployed" and named[-1][1] == "a down: refused"
