"""The /predict answer written without per-row dicts is byte for byte the dict form."""

import numpy as np
import orjson
import pytest

from serving.api.encoding import predictions_json

pytestmark = pytest.mark.unit


def dict_form(request_id: str, version: str, prob: np.ndarray, raw: np.ndarray) -> bytes:
    """How /predict encoded its answer before serving/api/encoding.py."""
    return orjson.dumps({"request_id": request_id, "model_version": version,
                         "predictions": [{"probability": p, "raw_score": r, "version": version}
                                         for p, r in zip(prob.tolist(), raw.tolist())]})


@pytest.mark.parametrize("n", [1, 2, 1000])
def test_same_bytes_as_the_dict_form(n):
    rng = np.random.default_rng(n)
    prob = rng.random(n)
    raw = rng.random(n).astype(np.float32).astype(np.float64)    # the network answers in float32
    got = predictions_json("a1b2", "12", prob, raw)
    assert got == dict_form("a1b2", "12", prob, raw)
    body = orjson.loads(got)
    assert [p["probability"] for p in body["predictions"]] == prob.tolist()
    assert {p["version"] for p in body["predictions"]} == {"12"}


def test_edge_values_are_written_as_the_dict_form_writes_them():
    prob = np.array([0.0, 1.0, 5e-324, 1e-300, 0.1 + 0.2, np.nan])
    raw = np.array([-0.0, 1e300, 123456789.0, 1e-7, np.inf, 0.5])
    assert predictions_json("r", "3", prob, raw) == dict_form("r", "3", prob, raw)


def test_mismatched_or_empty_scores_are_refused():
    with pytest.raises(ValueError, match="2 probabilities for 1 raw scores"):
        predictions_json("r", "1", np.zeros(2), np.zeros(1))
    with pytest.raises(ValueError):
        predictions_json("r", "1", np.zeros(0), np.zeros(0))
