"""What the server records for monitoring: counts on the reference bins, windows, labels, probes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.contract.metadata import InputSpec
from serving.monitoring.recorder import LABEL_BINS, LABELLED_MAX_ROWS, FeatureBins, Recorder, feature_bins
from serving.settings import ServingSettings

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _metadata():
    return SimpleNamespace(
        inputs=[InputSpec(name="age", type="integer", dtype="float64"),
                InputSpec(name="region", type="categorical", dtype="string"),
                InputSpec(name="owner", type="boolean", dtype="float64")],
        reference={"numeric": {"age": {"edges": [30.0, 50.0]}},
                   "categorical": {"region": {"categories": ["north", "south"]},
                                   "owner": {"categories": ["false", "true"]}},
                   "prediction": {"edges": [0.5]}})


def _columns(age, region, owner):
    return {"age": np.asarray(age, dtype=np.float64), "region": np.asarray(region, dtype=object),
            "owner": np.asarray(owner, dtype=np.float64)}


@pytest.fixture
def recorder():
    clock = Clock()
    rec = Recorder(window_s=60, keep_windows=3, label_window_s=3600, feedback_ttl_s=7200, feedback_max_rows=10,
                   clock=clock)
    rec.register("1", _metadata())
    rec.clock_ = clock
    yield rec
    rec.close()


def test_inputs_are_counted_on_the_reference_bins_with_unseen_and_null_buckets():
    bins = feature_bins(_metadata())
    assert bins["age"].count(np.array([10, 30, 49.9, 50, 1e9, np.nan])).tolist() == [1, 2, 2, 1]
    assert bins["region"].count(np.array(["north", "mars", "", "south", "north"], dtype=object)).tolist() == \
        [2, 1, 1, 1]
    assert bins["owner"].count(np.array([0, 1, 1, np.nan])).tolist() == [1, 2, 0, 1]
    assert FeatureBins("x", "numeric", edges=()).count(np.array([1.0, 2.0])).tolist() == [2, 0]


def test_a_window_merges_its_requests_and_keeps_a_series(recorder):
    clock = recorder.clock_
    recorder.scored("1", "a", _columns([20, 40], ["north", "mars"], [1, 0]), np.array([0.2, 0.97]))
    recorder.request("1", 200, 0.004)
    recorder.request("1", 422, 0.001, ("region", "region"))
    clock.now += 60
    recorder.scored("1", "b", _columns([60], [""], [np.nan]), np.array([0.6]))
    recorder.request("1", 200, 0.150)
    w = recorder.window(since=clock.now - 120)["versions"]["1"]
    assert (w["requests"], w["rows"], w["errors_4xx"], w["errors_5xx"]) == (3, 3, 1, 0)
    assert w["status"] == {"200": 2, "422": 1} and w["rejected_by_feature"] == {"region": 2}
    assert w["features"]["age"]["counts"] == [1, 1, 1, 0] and w["features"]["region"]["counts"] == [1, 0, 1, 1]
    assert w["prediction"]["counts"] == [1, 2] and w["prediction"]["extremes"] == 1
    assert w["prediction"]["sum"] == pytest.approx(1.77)
    assert [s["requests"] for s in w["series"]] == [2, 1]
    assert 150 <= w["p99_ms"] <= 150 * 1.13 and 4 <= w["p50_ms"] <= 4 * 1.13
    # Only what overlaps the asked span:
    assert recorder.window(since=clock.now)["versions"]["1"]["requests"] == 1


def test_old_windows_are_dropped(recorder):
    clock = recorder.clock_
    recorder.request("1", 200, 0.01)
    clock.now += 60 * 5
    recorder.request("1", 200, 0.01)
    assert recorder.window(since=0)["versions"]["1"]["requests"] == 1      # keep_windows=3


def test_labels_by_request_id_are_idempotent_and_unknown_ids_are_reported(recorder):
    clock = recorder.clock_
    recorder.scored("1", "r1", _columns([20, 40], ["north", "north"], [1, 1]), np.array([0.1, 0.8]))
    answer = recorder.feedback([{"request_id": "r1", "label": 1}, {"request_id": "r1", "row": 1, "label": 0},
                                {"request_id": "nope", "label": 1}, {"request_id": "r1", "label": 2},
                                {"request_id": "r1", "row": 5, "label": 1}])
    assert {k: answer[k] for k in ("accepted", "unknown", "invalid")} == {"accepted": 2, "unknown": 2, "invalid": 1}
    assert answer["unknown_ids"] == ["nope", "r1#5"] and answer["invalid_items"] == [3]
    again = recorder.feedback([{"request_id": "r1", "label": True}, {"request_id": "r1", "row": 1, "label": 1}])
    assert (again["unchanged"], again["replaced"]) == (1, 1)
    clock.now += 3 * 3600          # labels stay filed under the hour the rows were scored in
    (hour,) = recorder.window(since=clock.now - 4 * 3600)["versions"]["1"]["labels"]
    assert hour["n"] == 2 and hour["bins"] == LABEL_BINS
    assert hour["positive"][int(0.1 * LABEL_BINS)] == 1 and hour["positive"][int(0.8 * LABEL_BINS)] == 1
    assert sum(hour["negative"]) == 0 and sum(hour["probability_sum"]) == pytest.approx(0.9)


def test_rows_awaiting_labels_are_bounded_in_count_and_age(recorder):
    clock = recorder.clock_
    for i in range(6):
        recorder.scored("1", f"r{i}", _columns([20, 40], ["north"] * 2, [1, 1]), np.array([0.1, 0.2]))
    held = recorder.window(since=0)["awaiting_labels"]
    assert held["rows"] == 10 and held["evicted_rows"] == 2            # at most 10 rows: r0 went first
    assert recorder.feedback([{"request_id": "r0", "label": 1}])["unknown"] == 1
    clock.now += 7201                                                    # older than the TTL
    recorder.scored("1", "late", _columns([20], ["north"], [1]), np.array([0.3]))
    assert recorder.window(since=0)["awaiting_labels"]["requests"] == 1


def test_labelled_rows_come_back_with_their_raw_scores_oldest_first_and_capped(recorder):
    clock = recorder.clock_
    recorder.scored("1", "a", _columns([20, 40], ["north"] * 2, [1, 1]), np.array([0.1, 0.8]),
                    raw=np.array([0.25, 0.75]))
    clock.now += 10
    recorder.scored("1", "b", _columns([20, 40], ["north"] * 2, [1, 1]), np.array([0.2, 0.6]),
                    raw=np.array([0.3, 0.5]))
    recorder.scored("2", "c", _columns([20], ["north"], [1]), np.array([0.4]), raw=np.array([0.4]))
    recorder.scored("1", "old-server", _columns([20], ["north"], [1]), np.array([0.5]))    # no raw score kept
    recorder.feedback([{"request_id": "a", "row": 1, "label": 1}, {"request_id": "b", "label": 0},
                       {"request_id": "b", "row": 1, "label": 1}, {"request_id": "c", "label": 1},
                       {"request_id": "old-server", "label": 0}])
    got = recorder.labelled("1")
    assert [(r["request_id"], r["row"], r["raw_score"], r["label"]) for r in got["rows"]] == [
        ("a", 1, 0.75, 1), ("b", 0, 0.3, 0), ("b", 1, 0.5, 1)]                # version 1 only, unlabelled row left out
    assert got["rows"][0]["probability"] == pytest.approx(0.8) and got["rows"][0]["scored_at"] == 1_000_000.0
    assert (got["labelled"], got["truncated"], got["without_raw_score"]) == (3, False, 1)
    newest = recorder.labelled("1", limit=2)                                   # the cap keeps the newest rows
    assert [(r["request_id"], r["row"]) for r in newest["rows"]] == [("b", 0), ("b", 1)] and newest["truncated"]
    assert [r["request_id"] for r in recorder.labelled("1", since=1_000_005.0)["rows"]] == ["b", "b"]
    assert recorder.labelled("1", limit=10**9)["max_rows"] == LABELLED_MAX_ROWS


# ---------------------------------------------------------------- through the server

@pytest.fixture
def client(served_models):
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, feedback_token="labels-token")
    with TestClient(create_app(settings)) as c:
        assert c.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "1"},
                      headers=AUTH).status_code == 200
        yield c


def _golden_rows(served_models):
    import json

    return [g["features"] for g in json.loads((served_models["model_dir"] / "1" / "metadata.json").read_text())
            ["golden_examples"]]


def test_the_window_counts_user_traffic_and_leaves_probes_out(client, served_models):
    rows = _golden_rows(served_models)
    probe = {"X-Pipeline-Probe": "smoke"}
    assert client.post("/predict", json={"features": rows}, headers=probe).status_code == 200
    assert client.post("/predict", json={"features": [{"nope": 1}]}, headers=probe).status_code == 422
    assert client.post("/predict", json={"features": rows[:3]}).status_code == 200
    assert client.post("/predict", json={"features": [rows[0] | {"region": "mars"}]}).status_code == 422
    w = client.get("/monitoring/window").json()["versions"]["1"]
    assert (w["requests"], w["rows"], w["errors_4xx"]) == (2, 3, 1)
    assert w["rejected_by_feature"] == {"region": 1}
    assert sum(w["features"]["age"]["counts"]) == 3 and sum(w["prediction"]["counts"]) == 3
    text = client.get("/metrics").text
    assert 'serving_probe_requests_total{endpoint="predict",status="200"} 1.0' in text
    assert 'serving_predicted_rows_total{version="1"} 3.0' in text


def test_feedback_needs_its_token_and_labels_what_was_served(client, served_models):
    rows = _golden_rows(served_models)
    served = client.post("/predict", json={"features": rows[:2]}, headers={"X-Request-ID": "order-17"}).json()
    assert served["request_id"] == "order-17"
    labels = {"labels": [{"request_id": "order-17", "label": 1}, {"request_id": "order-17", "row": 1, "label": 0},
                         {"request_id": "order-99", "label": 1}]}
    assert client.post("/feedback", json=labels).status_code == 401
    assert client.post("/feedback", json=labels, headers=AUTH).status_code == 401     # the admin token is not it
    answer = client.post("/feedback", json=labels, headers={"Authorization": "Bearer labels-token"}).json()
    assert (answer["accepted"], answer["unknown"], answer["unknown_ids"]) == (2, 1, ["order-99"])
    assert client.post("/feedback", json={"labels": "x"}, headers={"Authorization": "Bearer labels-token"}
                       ).status_code == 422
    (hour,) = client.get("/monitoring/window").json()["versions"]["1"]["labels"]
    p = [x["probability"] for x in served["predictions"]]
    assert hour["n"] == 2 and sum(hour["probability_sum"]) == pytest.approx(sum(p), abs=1e-6)


def test_labelled_rows_need_the_admin_token_and_carry_the_served_raw_scores(client, served_models):
    rows = _golden_rows(served_models)
    served = client.post("/predict", json={"features": rows[:3]}, headers={"X-Request-ID": "loan-5"}).json()
    client.post("/feedback", json={"labels": [{"request_id": "loan-5", "row": r, "label": r // 2} for r in (0, 2)]},
                headers={"Authorization": "Bearer labels-token"})
    assert client.get("/monitoring/labelled", params={"version": "1"}).status_code == 401
    assert client.get("/monitoring/labelled", params={"version": "1"},
                      headers={"Authorization": "Bearer labels-token"}).status_code == 401
    assert client.get("/monitoring/labelled", params={"version": "1", "limit": 0}, headers=AUTH).status_code == 422
    got = client.get("/monitoring/labelled", params={"version": "1"}, headers=AUTH).json()
    assert [(r["row"], r["label"]) for r in got["rows"]] == [(0, 0), (2, 1)]
    for r in got["rows"]:
        answered = served["predictions"][r["row"]]
        assert r["raw_score"] == pytest.approx(answered["raw_score"], abs=1e-12)
        assert r["probability"] == pytest.approx(answered["probability"], abs=1e-6)
    assert client.get("/monitoring/labelled", params={"version": "2"}, headers=AUTH).json()["rows"] == []
    assert "/monitoring/labelled" in client.get("/openapi.json").json()["paths"]


def test_the_dashboard_page_is_self_contained_and_the_summary_has_the_guides_panels(client, served_models):
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text       # no CDN: hosts may be offline
    assert "setInterval(refresh, REFRESH)" in page.text and "const REFRESH = 30 * 1000" in page.text
    rows = _golden_rows(served_models)
    client.post("/predict", json={"features": rows})
    s = client.get("/monitoring/summary", params={"minutes": 10}).json()
    assert s["health"]["status"] == "healthy" and s["default_version"] == "1"
    c = s["current"]
    assert set(c) >= {"requests_per_minute", "latency_ms", "rate_4xx", "rate_5xx", "mean_prediction", "psi_max",
                      "labels", "series"}
    assert c["requests"] == 1 and len(c["series"]) in (10, 11) and sum(p["requests"] for p in c["series"]) == 1
    assert c["psi_status"] == "not enough data"        # 12 rows < 200
    assert client.get("/monitoring/summary", params={"minutes": 0}).status_code == 422


def test_an_inferred_contract_scores_values_outside_the_training_range_and_counts_them(tmp_path):
    """The issue's case: the training data's oldest applicant was 68; one aged 70 is scored, not refused."""
    from serving.contract.inputs import read_json_rows
    from tasks.training.data import infer_contract

    csv = tmp_path / "data.csv"
    csv.write_text("age,region,y\n" + "\n".join(f"{20 + i % 49},{'north' if i % 2 else 'south'},{i % 2}"
                                                 for i in range(200)) + "\n")
    schema, _features, _notes = infer_contract(csv, "y", "1")
    age, region = schema.column("age"), schema.column("region")
    assert (age.min, age.max, age.bounds, age.hard_min) == (20, 68, "soft", 0)
    specs = {"age": age, "region": region}
    columns, problems = read_json_rows(specs, [{"age": 70, "region": "east"}, {"age": -3, "region": "north"}])
    assert [(p.column, p.issue, p.rows) for p in problems] == [("age", "out of range", (1,))]   # only age < 0
    null = np.zeros(2, dtype=bool)
    assert age.outside_soft_bounds(columns["age"], null) == 2
    assert region.outside_soft_bounds(columns["region"], null) == 1
