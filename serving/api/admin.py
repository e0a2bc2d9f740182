"""Admin routes: what the server serves. /load, /unload, /default and /split, each with the admin token.

Each change runs through ``ServerState.changed``: under the load lock, or through the host's desired
state when this process is one of several (serving/workers/sync.py).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from fastapi import APIRouter, Request

from serving.api.accounting import AccountedRoute
from serving.api.auth import AdminOnly
from serving.api.errors import HTTPProblem, json_response
from serving.api.schemas import (
    MAX_WEIGHT,
    DefaultAnswer,
    LoadAnswer,
    SplitAnswer,
    SplitRequest,
    UnloadAnswer,
    body_spec,
    problems,
    read_body,
)
from serving.api.server import Server, ServerState
from serving.contract.errors import ServingError
from serving.scoring.versions import Conflict, LoadRefused, NotLoaded

router = APIRouter(route_class=AccountedRoute, dependencies=[AdminOnly], tags=["admin"],
                   responses=problems({401: "missing or wrong bearer token",
                                       503: "another server process of the host holds the state (see Retry-After)"}))
SPLIT_EXPECTED = 'expected {"weights": {"VERSION": WEIGHT, ...}, "shadow": VERSION or null}'


def admin_problem(exc: ServingError) -> HTTPProblem:
    status = {LoadRefused: 400, NotLoaded: 404, Conflict: 409}.get(type(exc), 422)
    return HTTPProblem(status, str(exc))


async def apply_admin(server: ServerState, change: Callable[[], None], event: str,
                      answer: Callable[[], dict]) -> dict:
    """Apply ``change`` to what is served, count ``event``, and return ``answer()``."""
    async def apply() -> dict:
        try:
            change()
        except ServingError as exc:
            raise admin_problem(exc) from None
        server.metrics.model_events.labels(event).inc()
        server.routing_changed()
        return answer()

    return await server.changed(apply)


@router.post("/load", responses={200: {"model": LoadAnswer}, **problems({
    400: "a path outside the model root, or an unusable version or digest", 409: "that version is loaded from "
    "elsewhere", 422: "the version failed its checks (files, schema, golden examples)"})})
async def load(request: Request, server: Server, model_dir: str, version: str, default: bool = True,
               metadata_sha256: str | None = None):
    """Load ``version`` from ``model_dir`` (inside SERVING_MODEL_ROOT), checked, warmed, and by default served."""
    request.state.version = version

    async def apply() -> dict:
        try:
            return await server.load_now(model_dir, version, default, metadata_sha256)
        except ServingError as exc:
            raise admin_problem(exc) from None

    return json_response(await server.changed(apply))


@router.post("/unload", responses={200: {"model": UnloadAnswer}, **problems({
    404: "that version is not loaded", 409: "the default version, or one in the split"})})
async def unload(server: Server, version: str):
    """Stop serving ``version``."""
    store = server.versions
    return json_response(await apply_admin(server, lambda: store.unload(version), "unload", lambda: {
        "status": "unloaded", "version": version, "loaded_versions": sorted(store.routing.models)}))


@router.post("/default", name="default", responses={200: {"model": DefaultAnswer},
                                                     **problems({404: "that version is not loaded"})})
async def make_default(server: Server, version: str):
    """Serve ``version`` to every request the split does not route elsewhere (an instant rollback)."""
    return json_response(await apply_admin(server, lambda: server.versions.set_default(version), "swap",
                                           lambda: {"status": "ok", "default_version": version}))


def split_of(body: bytes) -> tuple[dict[str, float], str | None]:
    """The weights and shadow version of a /split body.

    Raises:
        HTTPProblem: 422 for anything but the body SplitRequest describes.
    """
    try:
        parsed = orjson.loads(body or b"{}")
        weights = {str(k): v for k, v in (parsed.get("weights") or {}).items()}
        shadow = parsed.get("shadow")
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise HTTPProblem(422, SPLIT_EXPECTED) from None
    if shadow is not None and (type(shadow) not in (str, int) or not str(shadow).isdigit()):
        raise HTTPProblem(422, f"{SPLIT_EXPECTED}: shadow must be a version number")
    bad = [k for k, v in weights.items() if type(v) not in (int, float) or not 0 <= v <= MAX_WEIGHT]
    if bad:
        raise HTTPProblem(422, f"{SPLIT_EXPECTED}: weights must be finite numbers between 0 and {MAX_WEIGHT:g} "
                               f"(not: {', '.join(sorted(bad))[:200]})")
    return {k: float(v) for k, v in weights.items()}, None if shadow is None else str(shadow)


@router.post("/split", openapi_extra=body_spec(SplitRequest, "the traffic split; an empty body clears split and "
                                                             "shadow", required=False),
             responses={200: {"model": SplitAnswer}, **problems({
                 404: "a version is not loaded", 409: "weights that route nothing", 422: "not the body described"})})
async def split(request: Request, server: Server):
    """Route requests across loaded versions by weight (sticky by key), and name a shadow version."""
    weights, shadow = split_of(await read_body(request, server.settings.max_body_bytes))
    store = server.versions
    return json_response(await apply_admin(server, lambda: store.set_split(weights, shadow), "split", lambda: {
        "status": "ok", "weights": store.routing.weights(), "shadow": store.routing.shadow}))
