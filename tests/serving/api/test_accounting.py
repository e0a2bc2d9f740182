"""Request accounting, authorisation and the OpenAPI document of the routers (serving/api/)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram

from serving.api.app import create_app
from serving.monitoring.prometheus import PROBABILITY_BUCKETS, observe_many
from serving.settings import ServingSettings

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(served_models):
    settings = ServingSettings(model_root=served_models["root"], admin_token=TOKEN, monitoring=False)
    with TestClient(create_app(settings)) as c:
        yield c


def _samples(client, name: str) -> dict[tuple, float]:
    registry = client.app.state.server.metrics.registry
    return {tuple(sorted(s.labels.items())): s.value for m in registry.collect() for s in m.samples
            if s.name == name}


def test_every_route_is_counted_once_whatever_its_answer(client, served_models):
    params = {"model_dir": str(served_models["model_dir"]), "version": "1"}
    assert client.post("/load", params=params).status_code == 401            # refused by the dependency
    assert client.post("/load", params=params, headers=AUTH).status_code == 200
    assert client.post("/unload", params={"version": "7"}, headers=AUTH).status_code == 404
    assert client.get("/monitoring/window").status_code == 503             # monitoring is off
    assert client.get("/shadow", params={"limit": "x"}).status_code == 422   # FastAPI's own validation
    assert client.get("/health", headers={"X-Pipeline-Probe": "smoke"}).status_code == 200
    counted = _samples(client, "serving_requests_total")
    assert counted == {
        (("endpoint", "load"), ("status", "401"), ("version", "none")): 1.0,
        (("endpoint", "load"), ("status", "200"), ("version", "1")): 1.0,
        (("endpoint", "unload"), ("status", "404"), ("version", "none")): 1.0,
        (("endpoint", "monitoring_window"), ("status", "503"), ("version", "none")): 1.0,
        (("endpoint", "shadow"), ("status", "422"), ("version", "none")): 1.0}
    assert _samples(client, "serving_probe_requests_total") == {(("endpoint", "health"), ("status", "200")): 1.0}
    latency = _samples(client, "serving_request_latency_seconds_count")
    assert latency[(("endpoint", "load"),)] == 2.0 and (("endpoint", "health"),) not in latency


def test_a_refused_prediction_carries_its_request_id(client, served_models):
    r = client.post("/predict", json={"features": [{}]}, headers={"X-Request-ID": "req-7"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.headers["x-request-id"] == "req-7" and r.json()["request_id"] == "req-7"
    r = client.post("/predict", content=b"nope", headers={"X-Request-ID": "not ok!"})
    assert r.status_code == 422 and len(r.json()["request_id"]) == 32 and r.json()["request_id"] != "not ok!"
    assert "request_id" not in client.post("/unload", params={"version": "1"}).json()   # /predict's alone


def test_the_document_declares_the_bearer_scheme_and_the_settings_limits(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["HTTPBearer"]
        ["description"]}
    assert {"HTTPBearer": []} in spec["paths"]["/load"]["post"]["security"]
    assert "security" not in spec["paths"]["/health"]["get"]
    predict = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert predict["properties"]["features"]["maxItems"] == ServingSettings().max_batch_rows
    assert "$defs" not in str(spec["paths"]["/feedback"]["post"]["requestBody"])
    assert spec["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HealthAnswer"}


def test_observe_many_writes_what_observe_writes():
    values = np.array([0.0, 0.05, 0.050001, 0.5, 0.99, 1.0, 0.3, 0.3])
    one_by_one = Histogram("a", "a", buckets=PROBABILITY_BUCKETS, registry=CollectorRegistry())
    together = Histogram("b", "b", buckets=PROBABILITY_BUCKETS, registry=CollectorRegistry())
    for v in values.tolist():
        one_by_one.observe(v)
    observe_many(together, values)
    samples = [[(s.name[1:], s.labels, s.value) for s in h.collect()[0].samples if not s.name.endswith("_created")]
               for h in (one_by_one, together)]
    assert samples[0][:-1] == samples[1][:-1]                 # every bucket and the count
    assert samples[0][-1][2] == pytest.approx(samples[1][-1][2])   # the sum, added in another order
