"""Monitoring routes: the recorder's windows, labelled rows and summary, the dashboard, and /feedback.

The numbers come from serving/monitoring/recorder.py (the host's, when several processes serve);
with SERVING_MONITORING=false these routes answer 503 (the dashboard page itself still loads).
"""

from __future__ import annotations

import asyncio
import math
import time

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.accounting import AccountedRoute
from serving.api.auth import AdminOnly, FeedbackAccess, ReadAccess
from serving.api.errors import HTTPProblem, json_response
from serving.api.schemas import FeedbackAnswer, FeedbackRequest, LabelledAnswer, body_spec, problems, read_body
from serving.api.server import Server, ServerState
from serving.monitoring.dashboard import PAGE, summary
from serving.monitoring.recorder import LABELLED_MAX_ROWS

router = APIRouter(route_class=AccountedRoute, tags=["monitoring"])
OFF = {503: "monitoring is off on this server"}
DENIED = {401: "missing or wrong bearer token"}
FEEDBACK_OUTCOMES = ("accepted", "unchanged", "replaced", "unknown", "invalid")


def references(server: ServerState) -> dict[str, dict]:
    return {v: m.metadata.reference or {} for v, m in server.versions.routing.models.items()}


def recent_summary(server: ServerState, minutes: float, fresh: bool = True) -> dict:
    """The dashboard's numbers over the last ``minutes``, from what the recorder holds (the host's)."""
    window = server.require_recorder().window(time.time() - minutes * 60, None, fresh)
    return summary(window, server.health()[0], references(server), minutes, server.settings.drift_min_rows)


def _drift_gauges(server: ServerState, minutes: float) -> dict[str, dict[tuple[str, ...], float]]:
    numbers = recent_summary(server, minutes, fresh=False)
    psi, mean, ece, labelled, baseline = {}, {}, {}, {}, {}
    for version, v in numbers["versions"].items():
        for feature, value in v["psi"].items():
            psi[(version, feature)] = value
        if v["mean_prediction"] is not None:
            mean[(version,)] = v["mean_prediction"]
        if v["labels"].get("n"):
            ece[(version,)] = v["labels"]["ece"]
            labelled[(version,)] = v["labels"]["n"]
    for version, reference in references(server).items():
        if (reference.get("prediction") or {}).get("mean") is not None:
            baseline[(version,)] = reference["prediction"]["mean"]
    return {"serving_feature_psi": psi, "serving_prediction_mean": mean, "serving_ece": ece,
            "serving_labelled_rows": labelled, "serving_prediction_baseline_mean": baseline}


def publish_monitoring(server: ServerState, minutes: float = 60) -> None:
    """The last hour's drift and calibration as gauges, set whole (a feature under the minimum sample
    has no PSI, not a stale one). From the other workers' last publication (at most a second old):
    a scrape does not make them publish."""
    gauges: dict[str, dict[tuple[str, ...], float]] = {
        "serving_healthy": {(): 1.0 if server.health()[0]["status"] == "healthy" else 0.0}}
    if server.recorder is not None:
        gauges |= _drift_gauges(server, minutes)
    server.metrics.scrape_gauges.set(gauges)


@router.get("/monitoring/window", dependencies=[ReadAccess], responses=problems({**DENIED, **OFF,
                                                                                 422: "since or until not finite"}))
async def monitoring_window(server: Server, since: float | None = None, until: float | None = None):
    """Counts (never raw feature values) recorded since ``since`` (epoch seconds; default: an hour ago)."""
    since = time.time() - 3600 if since is None else since
    if not (math.isfinite(since) and (until is None or math.isfinite(until))):
        raise HTTPProblem(422, "since and until are epoch seconds")
    return json_response(await asyncio.to_thread(server.require_recorder().window, since, until))


@router.get("/monitoring/labelled", dependencies=[AdminOnly],
            responses={200: {"model": LabelledAnswer}, **problems({**DENIED, **OFF,
                                                                   422: "since or limit out of range"})})
async def monitoring_labelled(server: Server, version: str, since: float = 0.0, limit: int = LABELLED_MAX_ROWS):
    """Admin. The labelled rows of ``version`` scored since ``since`` (epoch seconds), oldest first, with
    their raw scores: what ``python -m flows recalibrate --labels feedback`` refits a calibrator on."""
    if not math.isfinite(since):
        raise HTTPProblem(422, "since is epoch seconds")
    if not 1 <= limit <= LABELLED_MAX_ROWS:
        raise HTTPProblem(422, f"limit must be between 1 and {LABELLED_MAX_ROWS}")
    return json_response(await asyncio.to_thread(server.require_recorder().labelled, version, since, limit))


@router.get("/monitoring/summary", dependencies=[ReadAccess],
            responses=problems({**DENIED, **OFF, 422: "minutes out of range"}))
async def monitoring_summary(server: Server, minutes: float = 60):
    """The dashboard's numbers over the last ``minutes``: the guide's panels, PSI and ECE included."""
    if not (math.isfinite(minutes) and 0 < minutes <= 24 * 60):
        raise HTTPProblem(422, "minutes must be between 0 and 1440")
    return json_response(await asyncio.to_thread(recent_summary, server, minutes))


@router.get("/dashboard")
async def dashboard():
    """The guide's monitoring dashboard: one self-contained page (no CDN), refreshing every 30 s."""
    return Response(PAGE, media_type="text/html; charset=utf-8")


def feedback_items(body: bytes) -> list:
    """The ``labels`` of a /feedback body.

    Raises:
        HTTPProblem: 422 when the body is not ``{"labels": [...]}``.
    """
    try:
        items = orjson.loads(body).get("labels")
    except (orjson.JSONDecodeError, AttributeError):
        items = None
    if not isinstance(items, list):
        raise HTTPProblem(422, 'expected {"labels": [{"request_id": ID, "label": 0 or 1, "row": N}, ...]}')
    return items


@router.post("/feedback", dependencies=[FeedbackAccess], openapi_extra=body_spec(
                 FeedbackRequest, "labels; items that are not of this shape are counted as invalid"),
             responses={200: {"model": FeedbackAnswer}, **problems({
                 **DENIED, **OFF, 413: "more labels than SERVING_MAX_FEEDBACK_ITEMS", 422: "not the body described"})})
async def feedback(request: Request, server: Server):
    """Labels for scored rows: {"labels": [{"request_id": ID, "label": 0|1, "row": N (default 0)}, ...]}."""
    settings = server.settings
    items = feedback_items(await read_body(request, settings.max_body_bytes))
    if len(items) > settings.max_feedback_items:
        raise HTTPProblem(413, f"{len(items)} labels; at most {settings.max_feedback_items} per request")
    result = await asyncio.to_thread(server.require_recorder().feedback, items)
    for outcome in FEEDBACK_OUTCOMES:
        if result[outcome]:
            server.metrics.feedback_labels.labels(outcome).inc(result[outcome])
    return json_response(result)
