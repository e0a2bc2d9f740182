"""``labelled``: the labelled rows the server on this host holds for a version, read with its admin token.

What ``python -m flows recalibrate --labels feedback`` refits on. The token never leaves the host: the
pipeline asks the agent, the agent asks the server (``GET /monitoring/labelled``).
"""

from __future__ import annotations

from pathlib import Path

from serving.host.client import call, labelled_query
from serving.host.errors import HostError
from serving.host.layout import admin_token

TIMEOUT_S = 60   # up to 100,000 rows a call


def labelled(base: Path, host: str, port: int, version: str, since: float) -> dict:
    """The labelled rows the server holds for ``version``, scored from ``since`` (epoch seconds).

    Raises:
        HostError: the server did not answer, or refused.
    """
    try:
        code, body = call(host, port, "GET", labelled_query(version, since), admin_token(base), timeout=TIMEOUT_S)
    except OSError as exc:
        raise HostError(f"the server at {host}:{port} did not answer for its labelled rows: {exc}") from None
    if code != 200:
        raise HostError(f"the server at {host}:{port} refused its labelled rows ({code}): {body.get('detail')}")
    return {"action": "labelled", **body}
