"""Where things are in MLflow, said safely: URIs without credentials, run links, the fluent API's URI."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")

# MLflow's REST client retries a request that gets no answer 7 times with a backoff factor of 2 (about
# 4 minutes), and a failed release makes two such calls (the step, then marking the version failed):
# 493 s from a stopped tracking server to the failure, measured (tests/faults/test_tracking_server_down.py).
# These bounds make it about 10 s a call; an operator's own MLFLOW_HTTP_REQUEST_* settings win.
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def safe_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` (a database or server URI with credentials in it)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` of every URI in it removed (MLflow's errors quote the
    request URL, credentials included)."""
    return _CREDENTIALS.sub(r"\g<scheme>", text)


def bound_http_retries() -> None:
    """Give MLflow's REST client ``HTTP_BOUNDS`` where the environment sets none (MLflow reads them per
    request): a tracking server that stopped fails the step in seconds, not minutes."""
    for key, value in HTTP_BOUNDS.items():
        os.environ.setdefault(key, value)


def run_link(client, tracking_uri: str, run_id: str) -> str:
    """Where a person finds the run: a URL for a tracking server, else the store and run id;
    never with credentials (this text goes into artifacts every UI user can read)."""
    uri = safe_uri(tracking_uri)
    if not run_id:
        return "-"
    if uri.startswith(("http://", "https://")):
        experiment = client.get_run(run_id).info.experiment_id
        return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    return f"run {run_id} in {uri} (`mlflow ui --backend-store-uri {uri}`)"


@contextmanager
def tracking_uri(uri: str):
    """Point MLflow's fluent API at ``uri`` for a block, then restore it.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the process
    environment; left in place, a later run with another pipeline home would log to
    this home's store.
    """
    import mlflow

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
