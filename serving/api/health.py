"""Reads about the server itself: /health, /model_info, /shadow and /metrics.

/health stays open (load balancers and the smoke test probe it); the others are reads
(SERVING_PROTECT_READS puts them behind the admin token), and /model_info?full=true, which holds
training rows, always needs the admin token.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.accounting import NO_VERSION, AccountedRoute
from serving.api.auth import ReadAccess, bearer, check_token
from serving.api.errors import json_response
from serving.api.monitoring_routes import publish_monitoring
from serving.api.schemas import HealthAnswer, problems
from serving.api.server import Server, ServerState

router = APIRouter(route_class=AccountedRoute, tags=["reads"])
BULKY_METADATA = ("golden_examples", "reference", "training", "calibration")   # /model_info?full=true only


@router.get("/health", responses={200: {"model": HealthAnswer}, 503: {"model": HealthAnswer,
                                                                      "description": "unhealthy: cannot serve"}})
async def health(request: Request, server: Server):
    """Whether this server can serve (200) or not (503), and what a person should look at."""
    body, status = server.health()
    request.state.version = body["default_version"] or NO_VERSION
    return json_response(body, status)


def versions_info(server: ServerState) -> dict[str, dict]:
    """Each loaded version: where it was loaded from, its release and its files' digests."""
    out = {}
    for version, model in sorted(server.versions.routing.models.items(), key=lambda kv: int(kv[0])):
        m = model.metadata
        out[version] = {"model_dir": str(model.version_dir), "release": m.release, "model_name": m.model_name,
                        "training_date": m.training_date, "model_digest": m.model_digest, "files": m.files}
    return out


def default_metadata(server: ServerState, full: bool) -> dict | None:
    """The default version's metadata.json; without ``full``, less the bulky (and raw-row) sections."""
    routing = server.versions.routing
    if not routing.default:
        return None
    meta = routing.models[routing.default].metadata.model_dump(mode="json", by_alias=True)
    if not full:
        for bulky in BULKY_METADATA:
            meta.pop(bulky, None)
    return meta


@router.get("/model_info", responses=problems({401: "missing or wrong bearer token (full=true needs the admin "
                                                    "token)"}))
async def model_info(server: Server, full: bool = False,
                     credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
    """What is served: versions, default, split, shadow, events, the workers and the input policy."""
    settings = server.settings
    if full or settings.protect_reads:
        # The full metadata holds raw training rows (the golden examples): only with the admin token.
        check_token(credentials, settings.admin_token)
    routing = server.versions.routing
    recent = server.recent_events()
    load_errors = server.load_warnings(recent)
    return json_response({
        "default_version": routing.default, "metadata": default_metadata(server, full),
        "versions": versions_info(server), "traffic_split": routing.weights(), "shadow": routing.shadow,
        "last_load_error": load_errors[-1] if load_errors else None, "events": recent, "pid": os.getpid(),
        "workers": server.workers_section(full=True),
        "policy": {"unknown_category": settings.unknown_category, "out_of_range": settings.out_of_range,
                   "max_batch_rows": settings.max_batch_rows}})


@router.get("/shadow", dependencies=[ReadAccess], responses=problems({401: "missing or wrong bearer token"}))
async def shadow(server: Server, limit: int = 100):
    """The shadow version and its last ``limit`` comparisons with the served one."""
    return json_response({"shadow": server.versions.routing.shadow, "recent": list(server.shadow_log)[-max(0, limit):]})


@router.get("/metrics", name="metrics", dependencies=[ReadAccess],
            responses=problems({401: "missing or wrong bearer token"}))
async def prometheus(server: Server):
    """Prometheus exposition: the host's series (every worker's), and the last hour's drift and calibration."""
    metrics = server.metrics
    metrics.queue_depth.set(server.scorer.depth() if server.scorer else 0)
    await asyncio.to_thread(publish_monitoring, server)
    return Response(await asyncio.to_thread(generate_latest, metrics.exposition), media_type=CONTENT_TYPE_LATEST)
