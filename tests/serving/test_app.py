"""The model server's API, in process (FastAPI's TestClient runs the real app and lifespan)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.settings import ServingSettings

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _golden(path):
    return json.loads((path / "metadata.json").read_text())["golden_examples"]


@pytest.fixture
def client(served_models):
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, max_batch_rows=50)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def loaded_client(served_models):
    """One server with version 1 loaded, shared by the tests that only send it requests (no admin calls, no
    state they check): loading the model takes about 0.2 s, once per test with ``client``."""
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, max_batch_rows=50)
    with TestClient(create_app(settings)) as c:
        assert _load(c, served_models).status_code == 200
        yield c


def _load(client, served_models, version="1", **params):
    return client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": version, **params},
                       headers=AUTH)


def test_unhealthy_until_a_model_is_loaded(client, served_models):
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "unhealthy" and r.json()["model_loaded"] is False
    assert client.post("/predict", json={"features": [{}]}).status_code == 503
    assert _load(client, served_models).status_code == 200
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {**r.json(), "status": "healthy", "model_loaded": True,
                                                 "default_version": "1"}


def test_predict_reproduces_the_golden_examples(client, served_models):
    _load(client, served_models)
    golden = _golden(served_models["model_dir"] / "1")
    r = client.post("/predict", json={"features": [g["features"] for g in golden]},
                    headers={"X-Request-ID": "req-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    body = r.json()
    assert body["request_id"] == "req-42" and body["model_version"] == "1"
    got = np.array([p["probability"] for p in body["predictions"]])
    assert np.max(np.abs(got - [g["probability"] for g in golden])) <= 1e-6
    assert np.max(np.abs(np.array([p["raw_score"] for p in body["predictions"]])
                         - [g["raw_score"] for g in golden])) <= 1e-6
    assert {p["version"] for p in body["predictions"]} == {"1"}
    assert len(client.post("/predict", json={"features": [golden[0]["features"]]}).json()["request_id"]) == 32


def _row(served_models):
    return dict(_golden(served_models["model_dir"] / "1")[0]["features"])


@pytest.mark.parametrize("mutate, feature, issue", [
    (lambda r: r.pop("age"), "age", "missing feature"),
    (lambda r: r.update(age="forty"), "age", "wrong type"),
    (lambda r: r.update(age=40.5), "age", "not a whole number"),
    (lambda r: r.update(debt_ratio=None), "debt_ratio", "missing values"),
    (lambda r: r.update(debt_ratio=-1), "debt_ratio", "out of range"),
    (lambda r: r.update(region="atlantis"), "region", "unknown category"),
    (lambda r: r.update(region=3), "region", "wrong type"),
    (lambda r: r.update(has_mortgage="maybe"), "has_mortgage", "wrong type"),
])
def test_bad_rows_get_422_naming_row_and_feature(loaded_client, served_models, mutate, feature, issue):
    good = _row(served_models)
    bad = dict(good)
    mutate(bad)
    r = loaded_client.post("/predict", json={"features": [good, bad]})
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [(e["column"], e["issue"], e["rows"]) for e in errors] == [(feature, issue, [1])]


def test_booleans_take_every_spelling_training_takes(loaded_client, served_models):
    """The same CSV row sent as JSON scores the same: "yes"/"no", "true"/"false", "1"/"0"."""
    row = _row(served_models)
    expected = {}
    for value in (True, False):
        expected[value] = loaded_client.post("/predict", json={"features": [row | {"has_mortgage": value}]}).json()
    for spelling, value in (("yes", True), ("no", False), ("TRUE", True), ("f", False), ("1", True), ("0", False)):
        r = loaded_client.post("/predict", json={"features": [row | {"has_mortgage": spelling}]})
        assert r.status_code == 200, (spelling, r.text)
        assert r.json()["predictions"] == expected[value]["predictions"], spelling


@pytest.mark.parametrize("body, status", [
    (b"not json", 422),
    (b'{"features": [{"age": NaN}]}', 422),
    (b'{"features": [{"income": 1e400}]}', 422),
    (b'{"features": []}', 422),
    (b'{"features": {"age": 1}}', 422),
    (b'{"features": [1, 2]}', 422),
    (b"[]", 422),
    (json.dumps({"features": [{}] * 51}).encode(), 413),
])
def test_malformed_requests_never_500(loaded_client, served_models, body, status):
    r = loaded_client.post("/predict", content=body)
    assert r.status_code == status, r.text
    assert "request_id" in r.json()


def _body_schema(spec: dict, path: str) -> dict:
    return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_the_openapi_spec_describes_the_bodies_read_without_pydantic(client, served_models):
    from jsonschema import Draft202012Validator

    spec = client.get("/openapi.json").json()
    predict, split, feedback = (Draft202012Validator(_body_schema(spec, p)) for p in ("/predict", "/split",
                                                                                      "/feedback"))
    assert spec["paths"]["/predict"]["post"]["requestBody"]["required"] is True
    golden = [g["features"] for g in _golden(served_models["model_dir"] / "1")]
    assert predict.is_valid({"features": golden, "key": "customer-7"})
    for bad in ({}, {"features": []}, {"features": [1]}, {"features": [{"age": [1]}]}, {"features": golden * 5},
                {"features": golden, "key": [1]}):
        assert not predict.is_valid(bad), bad        # (the client's max_batch_rows is 50)
    assert {p["name"] for p in spec["paths"]["/predict"]["post"]["parameters"]} == {"version", "X-Request-ID",
                                                                                    "X-Request-Key"}
    assert split.is_valid({"weights": {"1": 3, "2": 1}, "shadow": None}) and split.is_valid({"shadow": 2})
    for bad in ({"weights": {"1": -1}}, {"weights": {"1": 2e6}}, {"weights": {"x": 1}}, {"shadow": "v2"}):
        assert not split.is_valid(bad), bad
    assert feedback.is_valid({"labels": [{"request_id": "r1", "label": 1, "row": 3}]})
    assert not feedback.is_valid({"labels": [{"request_id": "r1", "label": 2}]})


def test_policy_can_let_unknown_categories_through(served_models):
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, unknown_category="allow")
    with TestClient(create_app(settings)) as c:
        _load(c, served_models)
        row = _row(served_models) | {"region": "atlantis"}
        assert c.post("/predict", json={"features": [row]}).status_code == 200


def test_admin_endpoints_need_the_token(client, served_models):
    params = {"model_dir": str(served_models["model_dir"]), "version": "1"}
    assert client.post("/load", params=params).status_code == 401
    assert client.post("/load", params=params, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/load", params=params, headers={"Authorization": TOKEN}).status_code == 401
    assert client.post("/unload", params={"version": "1"}).status_code == 401
    assert client.post("/default", params={"version": "1"}).status_code == 401
    assert client.post("/split", json={"weights": {"1": 1}}).status_code == 401
    assert client.get("/health").status_code == 503          # nothing was loaded by those calls


def test_without_a_configured_token_admin_is_off(served_models):
    with TestClient(create_app(ServingSettings(model_root=served_models["root"]))) as c:
        r = c.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "1"},
                   headers={"Authorization": "Bearer "})
        assert r.status_code == 401 and "SERVING_ADMIN_TOKEN" in r.json()["detail"]


def test_reads_can_be_protected(served_models):
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, protect_reads=True)
    with TestClient(create_app(settings)) as c:
        _load(c, served_models)
        row = _row(served_models)
        assert c.post("/predict", json={"features": [row]}).status_code == 401
        assert c.post("/predict", json={"features": [row]}, headers=AUTH).status_code == 200
        assert c.get("/model_info").status_code == 401 and c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200             # probes stay open


def test_versions_default_split_and_unload(client, served_models):
    assert _load(client, served_models, "1").status_code == 200
    r = _load(client, served_models, "2", default="false")
    assert r.status_code == 200 and r.json()["default_version"] == "1"
    row = _row(served_models)
    assert client.post("/predict", json={"features": [row]}).json()["model_version"] == "1"
    assert client.post("/predict?version=2", json={"features": [row]}).json()["model_version"] == "2"
    assert client.post("/predict?version=9", json={"features": [row]}).status_code == 404

    info = client.get("/model_info").json()
    assert info["default_version"] == "1" and set(info["versions"]) == {"1", "2"}
    assert info["versions"]["2"]["files"]["calibrator.pkl"] == \
        served_models["exported"][1].metadata.files["calibrator.pkl"]
    assert info["metadata"]["version"] == "1" and "golden_examples" not in info["metadata"]

    r = client.post("/split", json={"weights": {"1": 1, "2": 1}}, headers=AUTH)
    assert r.status_code == 200 and r.json()["weights"] == {"1": 0.5, "2": 0.5}
    served = {k: client.post("/predict", json={"features": [row]}, headers={"X-Request-Key": k}).json()
              ["model_version"] for k in (f"user-{i}" for i in range(40))}
    assert set(served.values()) == {"1", "2"}
    again = {k: client.post("/predict", json={"features": [row], "key": k}).json()["model_version"] for k in served}
    assert again == served                                      # sticky by key, header or body
    assert client.post("/unload", params={"version": "2"}, headers=AUTH).status_code == 409   # in the split
    assert client.post("/split", json={"weights": {}}, headers=AUTH).status_code == 200

    assert client.post("/unload", params={"version": "1"}, headers=AUTH).status_code == 409   # the default
    assert client.post("/default", params={"version": "2"}, headers=AUTH).status_code == 200
    assert client.post("/predict", json={"features": [row]}).json()["model_version"] == "2"
    assert client.post("/unload", params={"version": "1"}, headers=AUTH).status_code == 200
    assert client.get("/health").json()["loaded_versions"] == ["2"]
    assert client.post("/default", params={"version": "1"}, headers=AUTH).status_code == 404


def test_shadow_scores_without_answering(client, served_models):
    _load(client, served_models, "1")
    _load(client, served_models, "2", default="false")
    assert client.post("/split", json={"weights": {}, "shadow": "2"}, headers=AUTH).status_code == 200
    golden = _golden(served_models["model_dir"] / "1")
    body = client.post("/predict", json={"features": [g["features"] for g in golden]}).json()
    assert {p["version"] for p in body["predictions"]} == {"1"}
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client.get("/shadow").json()["recent"]:
        time.sleep(0.05)
    entry = client.get("/shadow").json()["recent"][-1]
    assert entry["served_version"] == "1" and entry["shadow_version"] == "2" and entry["rows"] == len(golden)
    assert entry["max_abs_divergence"] > 0       # two different networks
    assert "serving_shadow_rows_total" in client.get("/metrics").text


def test_a_failing_shadow_is_a_warning_and_an_event_not_an_error(client, served_models, monkeypatch):
    import time

    _load(client, served_models, "1")
    _load(client, served_models, "2", default="false")
    client.post("/split", json={"weights": {}, "shadow": "2"}, headers=AUTH)
    shadow = client.app.state.server.versions.routing.models["2"]

    def broken(columns):
        raise RuntimeError("injected shadow failure")

    monkeypatch.setattr(shadow, "score_columns", broken)
    row = _row(served_models)
    assert client.post("/predict", json={"features": [row]}).status_code == 200      # the answer is unaffected
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client.get("/health").json()["warnings"]:
        time.sleep(0.05)
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    assert any("injected shadow failure" in w for w in r.json()["warnings"])
    assert client.get("/model_info").json()["events"][-1]["event"] == "shadow_failed"
    assert 'serving_model_events_total{event="shadow_failed"} 1.0' in client.get("/metrics").text


@pytest.mark.faults
def test_corrupted_version_is_refused_and_the_old_one_keeps_serving(client, served_models, tmp_path):
    _load(client, served_models, "1")
    bad_root = served_models["root"] / "corrupt-test"
    shutil.rmtree(bad_root, ignore_errors=True)
    shutil.copytree(served_models["model_dir"] / "2", bad_root / "2")
    with open(bad_root / "2" / "calibrator.pkl", "ab") as fh:
        fh.write(b"\x00")
    r = client.post("/load", params={"model_dir": str(bad_root), "version": "2"}, headers=AUTH)
    assert r.status_code == 422 and "calibrator.pkl" in r.json()["detail"]
    # The previous version keeps serving, so the server is healthy (a rollback would fix nothing);
    # the refusal is a warning in /health, in /model_info and a model event.
    r = client.get("/health")
    health = r.json()
    assert r.status_code == 200 and health["status"] == "healthy" and health["default_version"] == "1"
    assert health["reasons"] == [] and any("refused" in w for w in health["warnings"])
    assert health["recent_events"][-1]["event"] == "load_failed"
    info = client.get("/model_info").json()
    assert "calibrator.pkl" in info["last_load_error"] and info["events"][-1]["event"] == "load_failed"
    assert 'serving_model_events_total{event="load_failed"} 1.0' in client.get("/metrics").text
    row = _row(served_models)
    assert client.post("/predict", json={"features": [row]}).json()["model_version"] == "1"
    assert _load(client, served_models, "2").status_code == 200          # a good load clears the warning
    assert client.get("/health").json()["warnings"] == []
    shutil.rmtree(bad_root)


def _edited_copy(served_models, name: str, edit) -> Path:
    root = served_models["root"] / name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(served_models["model_dir"] / "2", root / "2")
    meta_path = root / "2" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    return root


def _widen(meta) -> None:
    col = next(c for c in meta["schema"]["columns"] if c["type"] in ("numeric", "integer") and "max" in c)
    col["max"] = col["max"] * 1000


@pytest.mark.faults
@pytest.mark.parametrize("edit, why", [
    (_widen, "the schema was edited"),
    (lambda m: m.update(schema_hash="0" * 64), "the schema was edited"),
    (lambda m: m["feature_list"].reverse(), "feature_schema_hash"),
])
def test_an_edited_metadata_json_is_refused(client, served_models, edit, why):
    """metadata.json is outside its own file hashes: its schema is checked against schema_hash and the
    inputs' contract against feature_schema_hash, so widened ranges never reach scoring."""
    _load(client, served_models, "1")
    root = _edited_copy(served_models, "edited-test", edit)
    try:
        r = client.post("/load", params={"model_dir": str(root), "version": "2"}, headers=AUTH)
        assert r.status_code == 422 and why in r.json()["detail"], r.json()
        assert client.get("/health").json()["default_version"] == "1"
    finally:
        shutil.rmtree(root)


@pytest.mark.faults
def test_metadata_json_must_match_the_registry_and_the_release_manifest(client, served_models):
    from serving.contract.digest import sha256_file

    good = sha256_file(served_models["model_dir"] / "2" / "metadata.json")
    # A consistent edit (schema and both hashes rewritten) passes the self-checks; only an anchor outside
    # the file catches it: the hash the registry recorded, passed with /load, or the bundle's MANIFEST.
    root = _edited_copy(served_models, "edited-anchor", lambda m: m.update(release="9.9.9"))
    try:
        params = {"model_dir": str(root), "version": "2"}
        r = client.post("/load", params={**params, "metadata_sha256": good}, headers=AUTH)
        assert r.status_code == 422 and "the registry recorded" in r.json()["detail"]
        r = client.post("/load", params={**params, "metadata_sha256": "not-a-digest"}, headers=AUTH)
        assert r.status_code == 400
        (root / "MANIFEST").write_text(f"{good}  2/metadata.json\n")          # releases/<v>/MANIFEST's layout
        r = client.post("/load", params=params, headers=AUTH)
        assert r.status_code == 422 and "edited after unpacking" in r.json()["detail"]
        (root / "MANIFEST").write_text(f"{sha256_file(root / '2' / 'metadata.json')}  2/metadata.json\n")
        assert client.post("/load", params=params, headers=AUTH).status_code == 200
        untouched = {**params, "model_dir": str(served_models["model_dir"])}
        r = client.post("/load", params={**untouched, "metadata_sha256": good}, headers=AUTH)
        assert r.status_code == 409      # version 2 is loaded from the edited copy; the check itself passed
    finally:
        shutil.rmtree(root)


def test_paths_outside_the_root_are_refused(client, served_models, tmp_path):
    for model_dir in ("../../etc", "/etc", str(served_models["model_dir"]) + "/../../.."):
        r = client.post("/load", params={"model_dir": model_dir, "version": "1"}, headers=AUTH)
        assert r.status_code == 400 and "outside the model root" in r.json()["detail"], model_dir
    outside = tmp_path / "outside"
    shutil.copytree(served_models["model_dir"] / "1", outside / "1")
    link = served_models["root"] / "sneaky"
    link.symlink_to(outside)
    try:
        r = client.post("/load", params={"model_dir": str(link), "version": "1"}, headers=AUTH)
        assert r.status_code == 400 and "outside the model root" in r.json()["detail"]
    finally:
        link.unlink()
    r = client.post("/load", params={"model_dir": str(served_models["model_dir"]), "version": "1;rm"}, headers=AUTH)
    assert r.status_code == 400
    assert client.get("/health").json()["model_loaded"] is False


def test_prometheus_metrics(client, served_models):
    _load(client, served_models)
    row = _row(served_models)
    client.post("/predict", json={"features": [row]})
    client.post("/predict", json={"features": [row | {"region": "mars"}]})
    text = client.get("/metrics").text
    assert 'serving_requests_total{endpoint="predict",status="200",version="1"} 1.0' in text
    assert 'serving_requests_total{endpoint="predict",status="422",version="1"} 1.0' in text
    assert 'serving_input_problems_total{feature="region",issue="unknown category"} 1.0' in text
    assert 'serving_model_events_total{event="load"} 1.0' in text
    assert "serving_request_latency_seconds_bucket" in text and "serving_prediction_probability_bucket" in text
    assert 'serving_default_version{version="1"} 1.0' in text


# ---------------------------------------------------------------- hostile and careless input (issue 14)

@pytest.mark.faults
def test_deeply_nested_values_get_a_4xx_not_a_500(client, served_models):
    _load(client, served_models)
    deep = 1
    for _ in range(900):
        deep = [deep]
    row = _row(served_models) | {"age": deep}
    r = client.post("/predict", json={"features": [row]})
    assert r.status_code == 422 and "<list of 1>" in r.text
    nested_shadow = {"weights": {}, "shadow": deep}
    assert client.post("/split", json=nested_shadow, headers=AUTH).status_code == 422


@pytest.mark.parametrize("key", [b"[[1]]", b'{"a": 1}', b"[" * 1_000 + b"1" + b"]" * 1_000])
def test_a_routing_key_that_is_not_a_scalar_gets_422(loaded_client, served_models, key):
    # Found by tests/faults/test_fuzz.py: a key nested 1,000 levels deep became a string for the hash,
    # which recursed past Python's limit and answered 500.
    row = json.dumps(_row(served_models)).encode()
    r = loaded_client.post("/predict", content=b'{"features": [' + row + b'], "key": ' + key + b"}")
    assert r.status_code == 422 and "key" in r.json()["detail"], r.text
    for scalar in ("customer-7", 7, 7.5, None):
        r = loaded_client.post("/predict", json={"features": [_row(served_models)], "key": scalar})
        assert r.status_code == 200


def test_a_huge_value_is_not_echoed_back_whole(loaded_client, served_models):
    row = _row(served_models) | {"region": "x" * 1_000_000}
    r = loaded_client.post("/predict", json={"features": [row]})
    assert r.status_code == 422 and len(r.content) < 5_000 and "(1000002 characters)" in r.text


def test_a_body_over_the_limit_is_refused_before_it_is_read(served_models):
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, max_body_bytes=4096)
    with TestClient(create_app(settings)) as c:
        r = c.post("/predict", content=b'{"features": [' + b" " * 10_000 + b"]}",
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "SERVING_MAX_BODY_BYTES" in r.text


# The last one lies inside the root but is longer than the OS takes (found by tests/faults/test_fuzz.py: 500).
@pytest.mark.parametrize("model_dir", ["/tmp/a\x00b", "/tmp/" + "x" * 300, "a/" * 2_100])
def test_unusable_load_paths_get_400(client, model_dir):
    r = client.post("/load", params={"model_dir": model_dir, "version": "1"}, headers=AUTH)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("weights", [{"1": 1e308, "2": 1e308}, {"1": "inf"}, {"1": -1}, {"1": [1]}])
def test_split_weights_must_be_finite_and_sane(client, served_models, weights):
    _load(client, served_models, "1")
    _load(client, served_models, "2", default="false")
    r = client.post("/split", json={"weights": weights}, headers=AUTH)
    assert r.status_code == 422 and "weights must be finite" in r.text
    assert client.get("/model_info").json()["traffic_split"] == {}


@pytest.mark.faults
def test_a_request_waits_for_the_model_a_bounded_time(served_models, monkeypatch):
    import threading

    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, score_timeout_s=0.3)
    with TestClient(create_app(settings)) as c:
        _load(c, served_models)
        model = c.app.state.server.versions.routing.models["1"]
        release = threading.Event()
        real = model.score_columns

        def stuck(columns):
            release.wait(10)
            return real(columns)

        monkeypatch.setattr(model, "score_columns", stuck)
        r = c.post("/predict", json={"features": [_row(served_models)]})
        assert r.status_code == 503 and r.headers["retry-after"] == "5" and "did not answer" in r.text
        release.set()
        monkeypatch.setattr(model, "score_columns", real)
        assert c.post("/predict", json={"features": [_row(served_models)]}).status_code == 200


def test_full_model_info_holds_training_rows_and_needs_the_token(client, served_models):
    _load(client, served_models)
    assert "golden_examples" not in client.get("/model_info").json()["metadata"]
    assert client.get("/model_info", params={"full": "true"}).status_code == 401
    full = client.get("/model_info", params={"full": "true"}, headers=AUTH).json()
    assert full["metadata"]["golden_examples"]


def test_the_server_starts_with_an_allow_listed_environment():
    from serving.host.server import server_env

    env = {"PATH": "/usr/bin", "HOME": "/h", "LC_ALL": "C", "SERVING_MAX_BATCH_ROWS": "5", "TF_NUM_THREADS": "1",
           "AWS_SECRET_ACCESS_KEY": "x", "MLFLOW_TRACKING_PASSWORD": "y", "PREFECT_API_KEY": "z",
           "PIPELINE_HOME": "/p", "DATABASE_URL": "postgres://u:p@h/db"}
    assert server_env(env) == {"PATH": "/usr/bin", "HOME": "/h", "LC_ALL": "C", "SERVING_MAX_BATCH_ROWS": "5",
                               "TF_NUM_THREADS": "1"}


def test_a_restarted_server_serves_what_the_state_file_says(served_models, tmp_path):
    """A supervisor that replaces a dead server process must not bring back the version it was first
    started with: every admin change rewrites the state file, and a new process serves that."""
    state = tmp_path / "run" / "serving-state.json"
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, state_file=state,
                               model_dir=served_models["model_dir"], model_version="1")
    with TestClient(create_app(settings)) as first:
        assert first.get("/health").json()["default_version"] == "1"
        assert _load(first, served_models, "2").status_code == 200
        assert first.post("/split", json={"weights": {"1": 1, "2": 3}, "shadow": "1"}, headers=AUTH).status_code == 200
        saved = json.loads(state.read_text())
    assert saved["default"] == "2" and saved["previous"] == "1" and set(saved["models"]) == {"1", "2"}
    assert not list(state.parent.rglob("*.part"))                  # written through a rename: no leftovers
    assert saved["generation"] == 3                               # start, /load, /split

    with TestClient(create_app(settings)) as second:             # configured with version 1; the state wins
        info = second.get("/model_info").json()
        assert info["default_version"] == "2" and set(info["versions"]) == {"1", "2"}
        assert info["traffic_split"] == {"1": 0.25, "2": 0.75} and info["shadow"] == "1"
        assert second.post("/default", params={"version": "1"}, headers=AUTH).status_code == 200   # instant rollback
    assert json.loads(state.read_text())["default"] == "1"

    # A version whose files changed since it was served is not brought back; the rest is.
    copy = served_models["root"] / "restore-test"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(served_models["model_dir"] / "1", copy / "1")
    shutil.copytree(served_models["model_dir"] / "2", copy / "2")
    moved = {v: {**m, "model_dir": str(copy)} for v, m in saved["models"].items()}
    state.write_text(json.dumps({**saved, "models": moved}))
    meta = json.loads((copy / "2" / "metadata.json").read_text())
    (copy / "2" / "metadata.json").write_text(json.dumps({**meta, "release": "9.9.9"}))
    try:
        with TestClient(create_app(settings)) as third:
            health = third.get("/health").json()
            assert health["status"] == "healthy" and health["default_version"] == "1"      # the previous default
            assert health["loaded_versions"] == ["1"]
            assert any("version 2 not restored" in w for w in health["warnings"])
            assert third.get("/model_info").json()["traffic_split"] == {}
    finally:
        shutil.rmtree(copy)

    state.write_bytes(b"\x00garbage")                               # unreadable: the configured version
    with TestClient(create_app(settings)) as fourth:
        health = fourth.get("/health").json()
        assert health["default_version"] == "1" and health["recent_events"][0]["event"] == "restore_failed"
