"""The agent's calls to the model server on this host: /health, /load, /default and the labelled rows.

Every call goes to the address the server binds (the target's host), or to loopback when it binds every
address: a host whose server binds 10.0.0.5 has nothing listening on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from urllib.parse import urlencode

WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}   # noqa: S104 — bound to all: probe loopback


def probe_address(host: str) -> str:
    """Where this host's own calls reach the server that binds ``host``: that address, or loopback when
    the server binds every address."""
    return WILDCARDS.get(host, host)


def call(host: str, port: int, method: str, path: str, token: str | None = None, body: bytes | None = None,
         timeout: float = 120) -> tuple[int, dict]:
    """One call to the server that binds ``host``:``port``: its status and JSON answer.

    Raises:
        OSError: nothing answered (refused, unreachable, timed out).
    """
    conn = http.client.HTTPConnection(probe_address(host), port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw or b"null")
        except ValueError:
            return resp.status, {"raw": raw[:200].decode(errors="replace")}
    finally:
        conn.close()


def health(host: str, port: int, timeout: float = 10) -> dict:
    """The server's /health answer (whatever its status)."""
    return call(host, port, "GET", "/health", timeout=timeout)[1]


def server_health(host: str, port: int) -> dict | None:
    """The /health of a model server (ours, started by systemd rather than by this agent) on ``host``:``port``;
    None when what listens there is not one."""
    try:
        answer = health(host, port, timeout=3)
    except OSError:
        return None
    return answer if isinstance(answer, dict) and "loaded_versions" in answer else None


def all_workers_serving(health: dict, agreeing: bool = True) -> bool:
    """Every server process of the host has started (and, ``agreeing``, they serve the same); an older
    server without a workers section is one process."""
    workers = health.get("workers")
    if not isinstance(workers, dict):
        return True
    started = workers.get("count", 0) >= (workers.get("expected") or 1)
    return started and (bool(workers.get("agree")) or not agreeing)


def load_query(model_dir: Path, version: str, metadata_sha256: str | None) -> str:
    """The admin path that loads ``version`` from ``model_dir``."""
    query = {"model_dir": model_dir, "version": version}
    if metadata_sha256:
        query["metadata_sha256"] = metadata_sha256     # the server checks metadata.json against it
    return "/load?" + urlencode(query)


def default_query(version: str) -> str:
    """The admin path that makes an already loaded ``version`` the default."""
    return "/default?" + urlencode({"version": version})


def labelled_query(version: str, since: float) -> str:
    return "/monitoring/labelled?" + urlencode({"version": version, "since": since})


def port_free(host: str, port: int) -> bool:
    """Whether the server could bind ``host``:``port`` (what another process binds there, or on every address,
    takes it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
