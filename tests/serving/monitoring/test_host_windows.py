"""Host-wide monitoring: the windows of several server processes merge on read, labels join across them."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from serving.monitoring import host_windows as host_windows_module
from serving.monitoring.counts import Aggregate, LabelHist
from serving.monitoring.host_windows import HostWindows
from serving.monitoring.recorder import Recorder
from tests.serving.monitoring.test_recorder import _columns, _metadata

pytestmark = pytest.mark.unit


class Host:
    """Recorders sharing one run/monitoring store as the workers of one host do (names stand for pids)."""

    def __init__(self, root, names=("101-1", "102-1")) -> None:
        self.live = set(names)
        self.recorders = {}
        for name in names:
            rec = Recorder(window_s=60, keep_windows=60, label_window_s=3600, feedback_ttl_s=7200,
                           feedback_max_rows=1000,
                           host=HostWindows(root, name, lambda: set(self.live)))
            rec.register("1", _metadata())
            self.recorders[name] = rec

    def close(self) -> None:
        for rec in self.recorders.values():
            rec.close()


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path / "monitoring")
    yield h
    h.close()


def test_a_read_on_either_worker_counts_the_requests_of_both(host):
    a, b = host.recorders.values()
    a.scored("1", "ra", _columns([20, 40], ["north", "mars"], [1, 0]), np.array([0.2, 0.97]), 0.004)
    b.scored("1", "rb", _columns([60], [""], [np.nan]), np.array([0.6]), 0.150)
    b.request("1", 422, 0.001, ("region",))
    for reader in (a, b):
        w = reader.window(since=0)
        v = w["versions"]["1"]
        assert (v["requests"], v["rows"], v["errors_4xx"]) == (3, 3, 1) and v["status"] == {"200": 2, "422": 1}
        assert v["features"]["age"]["counts"] == [1, 1, 1, 0] and v["features"]["region"]["counts"] == [1, 0, 1, 1]
        assert v["prediction"]["counts"] == [1, 2] and v["prediction"]["sum"] == pytest.approx(1.77)
        assert w["workers"]["merged"] == 2 and w["workers"]["late"] == []
        assert w["awaiting_labels"]["requests"] == 2 and w["awaiting_labels"]["rows"] == 3
    assert a.window(since=0)["versions"]["1"]["requests"] == 3        # reading twice adds nothing (no self-merge)


def test_a_label_sent_to_one_worker_joins_the_row_another_scored_once(host):
    a, b = host.recorders.values()
    b.scored("1", "rb", _columns([20, 40], ["north"] * 2, [1, 1]), np.array([0.1, 0.8]), 0.01, raw=np.array([0.2, 0.7]))
    answer = a.feedback([{"request_id": "rb", "label": 1}, {"request_id": "rb", "row": 1, "label": 0}])
    assert answer["accepted"] == 2 and answer["unknown"] == 0      # rb was still in b's queue: a asked b first
    again = b.feedback([{"request_id": "rb", "label": 0}])          # replaced on the other worker
    assert again["replaced"] == 1
    for reader in (a, b):
        (hour,) = reader.window(since=0)["versions"]["1"]["labels"]
        assert hour["n"] == 2 and sum(hour["positive"]) == 0 and sum(hour["negative"]) == 2
        rows = reader.labelled("1")["rows"]
        assert [(r["request_id"], r["row"], r["raw_score"], r["label"]) for r in rows] == [("rb", 0, 0.2, 0),
                                                                                         ("rb", 1, 0.7, 0)]
    assert a.feedback([{"request_id": "nobody", "label": 1}])["unknown_ids"] == ["nobody"]


def test_a_dead_workers_counts_stay_and_a_silent_one_is_named_late(tmp_path, monkeypatch):
    host = Host(tmp_path / "monitoring", names=("101-1", "102-1"))
    try:
        a, b = host.recorders.values()
        b.request("1", 200, 0.01)
        b.close()                                   # a worker that stops shares what it holds
        host.live.discard("102-1")
        assert a.window(since=0)["versions"]["1"]["requests"] == 1
        monkeypatch.setattr(host_windows_module, "ASK_TIMEOUT_S", 0.3)
        host.live.add("103-1")                      # recorded as live, but no socket: late at once
        w = a.window(since=0)
        assert w["workers"]["late"] == [103] and w["workers"]["waited_s"] < 0.3
        silent = HostWindows(tmp_path / "monitoring", "104-1", lambda: set())     # a socket, nobody reading it
        host.live = {"101-1", "104-1"}
        w = a.window(since=0)
        silent.close()
        assert w["workers"]["late"] == [104] and 0.3 <= w["workers"]["waited_s"] < 2
        assert w["versions"]["1"]["requests"] == 1
    finally:
        host.recorders.pop("102-1")
        host.close()


def test_expired_windows_of_dead_workers_are_deleted_and_then_the_worker(tmp_path):
    root = tmp_path / "monitoring"
    dead = HostWindows(root, "7-1", lambda: set())
    dead.write_mine({0: {"1": Aggregate().to_raw()}, 600: {"1": Aggregate().to_raw()}}, {0: {}}, None)
    dead.close()
    reader = HostWindows(root, "8-1", lambda: {"8-1"})
    assert [s for s, _ in sorted(reader.others_windows("w", 0, 10_000))] == [0, 600]
    reader.delete_expired(window_oldest=300, label_oldest=-1)
    assert [s for s, _ in reader.others_windows("w", 0, 10_000)] == [600] and "7-1" in reader.known()
    reader.delete_expired(window_oldest=10_000, label_oldest=10_000)
    assert reader.known() == {"8-1"}
    reader.close()


def test_counts_survive_the_trip_through_the_shared_store():
    agg = Aggregate()
    agg.add_requests([200, 422], np.array([0.004, 0.2]), ["region"])
    agg.features["age"] = np.array([1, 2, 3], dtype=np.int64)
    agg.prediction, agg.p_sum, agg.p_sumsq, agg.extremes, agg.rows = np.array([4, 5]), 1.5, 0.9, 2, 9
    back = Aggregate.from_raw(json.loads(orjson.dumps(agg.to_raw(), option=orjson.OPT_SERIALIZE_NUMPY)))
    assert back.to_dict({}, np.array([0.5])) == agg.to_dict({}, np.array([0.5]))
    twice = Aggregate.from_raw(agg.to_raw())
    twice.merge(back)
    assert twice.requests == 4 and twice.features["age"].tolist() == [2, 4, 6] and twice.latency.sum() == 4
    hist = LabelHist()
    hist.add(0.3, 1)
    merged = LabelHist.from_raw(json.loads(orjson.dumps(hist.to_raw(), option=orjson.OPT_SERIALIZE_NUMPY)))
    merged.merge(hist)
    assert merged.to_dict()["n"] == 2 and sum(merged.to_dict()["probability_sum"]) == pytest.approx(0.6)


def test_a_starting_worker_is_kept_though_it_has_no_record_yet(tmp_path):
    import os

    from serving.contract.processes import started_at

    root = tmp_path / "monitoring"
    starting = HostWindows(root, f"{os.getpid()}-{started_at(os.getpid())}", lambda: set())
    HostWindows(root, "99999999-1", lambda: set()).close()      # no such process: a dead worker, no windows
    reader = HostWindows(root, "8-1", lambda: {"8-1"})
    reader.delete_expired(window_oldest=10, label_oldest=10)
    assert reader.known() == {starting.me, "8-1"}
    starting.close()
    reader.close()
