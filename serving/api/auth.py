"""Who may call what: bearer tokens checked as FastAPI dependencies.

    admin      /load, /unload, /default, /split, /monitoring/labelled, /model_info?full=true
    read       /predict, /model_info, /shadow, /metrics, /monitoring/*: open unless SERVING_PROTECT_READS
    feedback   /feedback: SERVING_FEEDBACK_TOKEN, or the admin token when it is unset

/health and /dashboard stay open (probes and people). Without a configured token the routes it guards
answer 401: admin is off, not open.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.api.errors import HTTPProblem

# auto_error=False: the 401s are ours (their messages are part of the API); the scheme is still declared
# in the OpenAPI document.
bearer = HTTPBearer(auto_error=False, description="SERVING_ADMIN_TOKEN (or SERVING_FEEDBACK_TOKEN for /feedback)")


def check_token(credentials: HTTPAuthorizationCredentials | None, token: str | None) -> None:
    """Pass when ``credentials`` carry ``token``.

    Raises:
        HTTPProblem: 401 when no token is configured, or the request's is missing or wrong.
    """
    if not token:
        raise HTTPProblem(401, "admin endpoints are disabled: the server has no SERVING_ADMIN_TOKEN")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPProblem(401, "missing or wrong bearer token")


# async dependencies: FastAPI would run a plain ``def`` one in its thread pool, a hand-off per request.
async def require_admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The admin token."""
    check_token(credentials, request.app.state.server.settings.admin_token)


async def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The admin token when reads are protected (SERVING_PROTECT_READS), else nothing."""
    settings = request.app.state.server.settings
    if settings.protect_reads:
        check_token(credentials, settings.admin_token)


async def require_feedback(request: Request,
                           credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The feedback token, or the admin token when none is set."""
    settings = request.app.state.server.settings
    check_token(credentials, settings.feedback_token or settings.admin_token)


AdminOnly = Depends(require_admin)
ReadAccess = Depends(require_read)
FeedbackAccess = Depends(require_feedback)
