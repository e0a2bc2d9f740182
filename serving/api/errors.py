"""What the API answers when a request cannot be served: one exception, one JSON shape.

Every refusal is ``{"detail": "...", ...}`` with a 4xx or 5xx status; /predict's also carry the
request id (body and ``X-Request-ID`` header), so a client can quote it.
"""

from __future__ import annotations

import orjson
from fastapi.responses import Response

RETRY_AFTER_S = 5
CLIENT_CLOSED = 499    # nginx's status for a request whose client hung up before the answer


class HTTPProblem(Exception):
    """A request refused with ``status``: ``detail`` says why, ``extra`` are more fields of the answer.

    Args:
        status: the HTTP status.
        detail: what went wrong and, where it helps, what to do.
        headers: response headers (Retry-After on a 503 a client should retry).
        extra: further fields of the JSON answer (``errors``: the rows and features at fault).
    """

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra


def json_response(payload: dict, status: int = 200, headers: dict | None = None) -> Response:
    """``payload`` as JSON bytes (numpy values included), without FastAPI's encoder."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)

