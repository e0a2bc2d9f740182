"""Every request counted once, whatever its route and however it ends: the route class of every router.

``AccountedRoute`` wraps FastAPI's request handler (FastAPI's documented place for per-route timing), so
the answer's status is known whether the handler returned, raised an ``HTTPProblem`` (the exception
handler answers it afterwards) or failed. Per request, once:

- ``serving_requests_total{endpoint, status, version}`` and ``serving_request_latency_seconds{endpoint}``,
  or, for a request marked ``X-Pipeline-Probe`` (the smoke test, the monitor's probe), only
  ``serving_probe_requests_total{endpoint, status}``: probes never enter the user's series;
- for /predict refusals, the recorder's ``request(...)`` (answered requests come with their rows).

The endpoint label is the route's name; the version label is what the handler set as
``request.state.version`` ("none" until it does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from serving.api.errors import HTTPProblem

# Requests carrying this header (the smoke test, the monitor's probe) are counted apart from user
# traffic: they never enter the request, error, latency or prediction series.
PROBE_HEADER = "x-pipeline-probe"
NO_VERSION = "none"

log = logging.getLogger(__name__)


def is_probe(request: Request) -> bool:
    return PROBE_HEADER in request.headers


def _status_of(exc: Exception) -> int:
    if isinstance(exc, HTTPProblem):
        return exc.status
    if isinstance(exc, RequestValidationError):
        return 422
    return getattr(exc, "status_code", 500)     # Starlette's HTTPException, else a failure


def record(request: Request, endpoint: str, status: int, start: float, problem: Exception | None = None) -> None:
    """Count one answered request (see the module's docstring); a full disk (a new series' metrics file
    cannot grow) loses the count, never the answer."""
    try:
        _record(request, endpoint, status, start, problem)
    except OSError as exc:
        lost = request.app.state.server.metrics.not_counted
        lost[endpoint] = lost.get(endpoint, 0) + 1
        if lost[endpoint] == 1:      # once per endpoint and process: every request after it fails the same way
            log.warning("metrics: a request to %s not counted (%s); the next ones are not logged", endpoint, exc)


def _record(request: Request, endpoint: str, status: int, start: float, problem: Exception | None) -> None:
    server = request.app.state.server
    metrics = server.metrics
    if is_probe(request):
        metrics.probe_requests.labels(endpoint, str(status)).inc()
        return
    seconds = time.perf_counter() - start
    version = getattr(request.state, "version", NO_VERSION)
    metrics.requests.labels(endpoint, str(status), version).inc()
    metrics.latency.labels(endpoint).observe(seconds)
    if endpoint == "predict" and status != 200 and server.recorder is not None:
        extra = problem.extra if isinstance(problem, HTTPProblem) else {}
        rejected = tuple(e["column"] or "" for e in extra.get("errors", ()))
        server.recorder.request(version, status, seconds, rejected)


class AccountedRoute(APIRoute):
    """An APIRoute whose every request is counted by ``record``, under the route's name."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = self.name

        async def accounted(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:
                record(request, endpoint, _status_of(exc), start, exc)
                raise
            record(request, endpoint, response.status_code, start)
            return response

        return accounted
