"""The model server: the handover guide's API (/load, /health, /model_info, /predict) and more.

Start it with ``uvicorn serving.api.app:app --host 0.0.0.0 --port 8000`` (configured by
SERVING_* environment variables, see serving/settings.py) or ``python -m serving``.
``create_app`` puts the routers together (serving/api/admin.py, health.py, monitoring_routes.py,
predict.py) around one ``ServerState`` on ``app.state.server`` (serving/api/server.py).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from serving.api import admin, health, monitoring_routes, predict
from serving.api.errors import HTTPProblem, json_response
from serving.api.schemas import with_limits
from serving.api.server import ServerState
from serving.contract.model import import_tensorflow
from serving.settings import ServingSettings, settings_from_env, threads_per_worker

log = logging.getLogger(__name__)
ROUTERS = (predict.router, admin.router, health.router, monitoring_routes.router)


def configure_threads(settings: ServingSettings) -> None:
    tf = import_tensorflow()

    try:
        # Several server processes share the CPUs: each gets its part, so they do not oversubscribe.
        tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads
                                                             or threads_per_worker(settings.workers))
        tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads or 1)
    except RuntimeError:
        log.info("TensorFlow already initialised; thread settings unchanged")


@asynccontextmanager
async def lifespan(app: FastAPI):
    server: ServerState = app.state.server
    await asyncio.to_thread(configure_threads, server.settings)
    await server.start()
    try:
        yield
    finally:
        server.stop()


async def problem_answer(request: Request, exc: HTTPProblem) -> Response:
    """Every refusal as ``{"detail": ..., ...}``; /predict's carry the request id (body and header)."""
    body = {"detail": exc.detail, **exc.extra}
    headers = dict(exc.headers or {})
    request_id = getattr(request.state, "request_id", None)
    if request_id is not None:
        body["request_id"] = request_id
        headers["x-request-id"] = request_id
    return json_response(body, exc.status, headers or None)


def openapi_document(app: FastAPI) -> dict:
    """FastAPI's document, with the app's limits (rows per /predict, labels per /feedback) filled in."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        app.openapi_schema = with_limits(document, app.state.server.settings)
    return app.openapi_schema


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The server's app for ``settings`` (default: from SERVING_* variables); nothing starts before its lifespan."""
    app = FastAPI(title="Tabular model server", version="1.0", lifespan=lifespan)
    app.state.server = ServerState(settings or settings_from_env())
    app.add_exception_handler(HTTPProblem, problem_answer)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = partial(openapi_document, app)
    return app


def __getattr__(name: str):
    # `uvicorn serving.api.app:app` builds the app on first access, not at import.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
