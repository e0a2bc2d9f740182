"""/predict: bytes → orjson → numpy columns → one batched model call → orjson bytes.

The hot path keeps pandas and pydantic away: the body is read raw and checked here (what
``PredictRequest`` in serving/api/schemas.py declares), the rows become typed columns in one pass
(serving/contract/inputs.py), the scorer thread batches them with concurrent requests
(serving/scoring/batcher.py), and the answer is written as bytes (serving/api/encoding.py). Each step
is one function below; ``predict`` only runs them in order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from functools import partial

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.accounting import AccountedRoute, is_probe
from serving.api.auth import bearer, require_read
from serving.api.encoding import predictions_json
from serving.api.errors import RETRY_AFTER_S, HTTPProblem
from serving.api.schemas import REQUEST_ID_PATTERN, PredictAnswer, PredictRequest, body_spec, problems, read_body
from serving.api.server import ServerState
from serving.contract.inputs import read_json_rows
from serving.contract.model import LoadedModel
from serving.monitoring.prometheus import observe_many
from serving.scoring.versions import Routing

log = logging.getLogger(__name__)
router = APIRouter(route_class=AccountedRoute, tags=["predict"])

REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
SHADOW_ROWS_OBSERVED = 100     # rows per request that enter the probability and divergence histograms
JSON_KINDS = {dict: "an object", list: "an array", bool: "true or false"}
RETRY_LATER = {"retry-after": str(RETRY_AFTER_S)}


def request_id(request: Request) -> str:
    """The client's X-Request-ID when it is a sane one, else a new one; kept for the answer, refusals included."""
    given = request.headers.get("x-request-id")
    if given is None or not REQUEST_ID_RE.match(given):
        # 128 random bits as 32 hex digits, like uuid4().hex, without its system call per request:
        # an id to quote and to join labels on, not a secret.
        given = f"{random.getrandbits(128):032x}"
    request.state.request_id = given
    return given


def parse_rows(body: bytes, max_rows: int) -> tuple[list[dict], object]:
    """The feature rows and the routing key of a /predict body.

    Raises:
        HTTPProblem: 422 when the body is not ``{"features": [{...}, ...]}``; 413 over ``max_rows`` rows.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(422, f"body is not valid JSON (NaN and Infinity are not JSON): {exc}") from None
    rows = parsed.get("features") if isinstance(parsed, dict) else None
    if not isinstance(rows, list) or not rows:
        raise HTTPProblem(422, 'expected {"features": [{"feature": value, ...}, ...]} with at least one row')
    if len(rows) > max_rows:
        raise HTTPProblem(413, f"{len(rows)} rows; at most {max_rows} per request")
    if set(map(type, rows)) != {dict}:
        not_objects = [i for i, r in enumerate(rows) if type(r) is not dict]
        raise HTTPProblem(422, f"rows {not_objects[:10]} are not JSON objects")
    return rows, parsed.get("key")


def pick_version(routing: Routing, wanted: str | None, key: object) -> str:
    """The version asked for, else the one the split routes ``key`` to (the default without a split).

    Raises:
        HTTPProblem: 404 for a version not loaded; 422 for a key that is not a scalar; 503 with nothing loaded.
    """
    if wanted is not None:
        if wanted not in routing.models:
            raise HTTPProblem(404, f"version {wanted} is not loaded; loaded: {sorted(routing.models)}")
        return wanted
    if key is not None and type(key) not in (str, int, float):
        # str() of a value nested a thousand levels deep recurses past Python's limit
        raise HTTPProblem(422, '"key" (the sticky routing key) must be a string or a number, not '
                               + JSON_KINDS.get(type(key), type(key).__name__))
    version = routing.pick(None if key is None else str(key))
    if version is None:
        raise HTTPProblem(503, "no model loaded", headers=RETRY_LATER)
    return version


def typed_columns(server: ServerState, model: LoadedModel, rows: list[dict]) -> dict[str, np.ndarray]:
    """The rows as the model's typed input columns.

    Raises:
        HTTPProblem: 422 naming every row and feature that breaks the data contract (counted per feature).
    """
    columns, found = read_json_rows(model.specs, rows, server.settings.policy)
    if found:
        for p in found:
            server.metrics.input_problems.labels(p.column or "", p.issue).inc()
        raise HTTPProblem(422, f"{len(found)} problem(s) with the input; rows are 0-based",
                          errors=[p.to_dict() for p in found])
    return columns


async def score(server: ServerState, model: LoadedModel, columns: dict[str, np.ndarray],
                n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and probabilities from the scorer thread, waited for at most SERVING_SCORE_TIMEOUT_S.

    Raises:
        HTTPProblem: 503 when the model did not answer in time (the job is cancelled: the scorer skips it).
    """
    timeout = server.settings.score_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.wrap_future(server.scorer.submit(model, columns, n_rows))
    except TimeoutError:
        raise HTTPProblem(503, f"the model did not answer within {timeout:g} s; retry later",
                          headers=RETRY_LATER, retry_after=RETRY_AFTER_S) from None


def record_shadow(server: ServerState, request_id: str, served: str, shadow_version: str, served_prob: np.ndarray,
                  fut) -> None:
    """The shadow version's scores for a request already answered (runs on the scorer thread)."""
    if fut.exception() is not None:     # the answer was already sent: a warning, never an error
        server.shadow_error = f"shadow version {shadow_version} failed to score: {fut.exception()}"
        server.event("shadow_failed", server.shadow_error)
        return
    server.shadow_error = None
    _raw, prob = fut.result()
    diff = np.abs(prob - served_prob)
    server.metrics.shadow_rows.labels(shadow_version).inc(prob.size)
    observe_many(server.metrics.shadow_divergence.labels(shadow_version), diff[:SHADOW_ROWS_OBSERVED])
    server.shadow_log.append({
        "request_id": request_id, "served_version": served, "shadow_version": shadow_version, "rows": int(prob.size),
        "mean_abs_divergence": float(diff.mean()), "max_abs_divergence": float(diff.max()),
        "shadow_probabilities": prob[:10].tolist(), "served_probabilities": served_prob[:10].tolist(),
        "at": time.time()})


def start_shadow(server: ServerState, routing: Routing, request_id: str, served: str,
                 columns: dict[str, np.ndarray], n_rows: int, prob: np.ndarray) -> None:
    """Score the request with the shadow version too, if there is one; never waited for."""
    shadow_version = routing.shadow
    if shadow_version and shadow_version != served and shadow_version in routing.models:
        fut = server.scorer.submit(routing.models[shadow_version], columns, n_rows)
        fut.add_done_callback(partial(record_shadow, server, request_id, served, shadow_version, prob))


def observe_answer(server: ServerState, version: str, request_id: str, columns: dict[str, np.ndarray],
                   prob: np.ndarray, raw: np.ndarray, seconds: float) -> None:
    """What a user's answered request adds to the metrics and the monitoring windows."""
    metrics = server.metrics
    metrics.rows.labels(version).inc(prob.size)
    observe_many(metrics.probability.labels(version), prob[:SHADOW_ROWS_OBSERVED])
    if server.recorder is not None:
        server.recorder.scored(version, request_id, columns, prob, seconds, raw)


def _header(name: str, description: str, **schema) -> dict:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


# /predict reads its request itself: FastAPI resolving parameters and dependencies costs more than a 1-row
# request's own work (bench/profile_predict.py), so they are declared here and read in the handler. The
# security requirement is the ReadAccess dependency's (checked by ``require_read``, called directly).
PREDICT_SPEC = {
    **body_spec(PredictRequest, "feature rows, scored in one batch; rows are 0-based in error answers"),
    "parameters": [
        {"name": "version", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "score with this loaded version instead of the routed one"},
        _header("X-Request-ID", "echoed back; anything else is replaced by a generated id",
                pattern=REQUEST_ID_PATTERN),
        _header("X-Request-Key", "sticky routing key for a traffic split")],
    "security": [{bearer.scheme_name: []}, {}],
}


@router.post("/predict", openapi_extra=PREDICT_SPEC,
             responses={200: {"model": PredictAnswer, "description": "one prediction per row, in order"},
                        **problems({401: "missing or wrong bearer token (with SERVING_PROTECT_READS)",
                                    404: "the version asked for is not loaded",
                                    413: "more rows than SERVING_MAX_BATCH_ROWS, or a body over "
                                         "SERVING_MAX_BODY_BYTES",
                                    422: 'not JSON, not {"features": [...]}, or rows that break the data contract '
                                         '("errors" names row and feature)',
                                    503: "no model loaded, or the model did not answer in time (see Retry-After)"})})
async def predict(request: Request):
    """Score feature rows with the routed (or the asked-for) version: one probability per row, in order."""
    start = time.perf_counter()
    rid = request_id(request)
    server: ServerState = request.app.state.server
    if server.settings.protect_reads:      # the header is parsed only when reads need the token
        await require_read(request, await bearer(request))
    try:
        rows, key = parse_rows(await read_body(request, server.settings.max_body_bytes),
                               server.settings.max_batch_rows)
        routing = server.versions.routing
        version = pick_version(routing, request.query_params.get("version"),
                               request.headers.get("x-request-key") or key)
        request.state.version = version
        model = routing.models[version]
        columns = typed_columns(server, model, rows)
        raw, prob = await score(server, model, columns, len(rows))
        start_shadow(server, routing, rid, version, columns, len(rows), prob)
    except HTTPProblem:
        raise
    except Exception:
        log.exception("predict failed (request %s)", rid)
        raise HTTPProblem(500, "internal error; see the server log") from None
    if not is_probe(request):
        observe_answer(server, version, rid, columns, prob, raw, time.perf_counter() - start)
    return Response(predictions_json(rid, version, prob, raw), media_type="application/json",
                    headers={"x-request-id": rid})
