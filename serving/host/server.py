"""The model server on this host: ``start`` (hot-load or launch), ``activate``, ``stop`` and ``status``.

The running server is the one this agent started (run/server.pid, checked against run/server.json), or one
its supervisor runs (the ml-pipeline-api systemd unit, reading this host's run/admin_token). A server
started here runs detached in a session of its own, under gunicorn's master with ``workers`` server
processes; stopping it ends that whole process group.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from serving.contract.constants import VENV_TIMEOUT_S
from serving.contract.files import atomic_write
from serving.host.client import all_workers_serving, call, default_query, health, load_query, port_free, server_health
from serving.host.environments import ensure_venv, release_venv
from serving.host.errors import HostError
from serving.host.layout import (
    PID_FILE,
    SERVER_ENV,
    SERVER_LOG,
    STATE_FILE,
    TOKEN_FILE,
    admin_token,
    forget_server,
    model_dir,
    not_our_server,
    pid_file,
    record_server,
    release_dir,
    releases,
    run_dir,
    server_pid,
)
from serving.host.processes import terminate_group

POLL_S = 0.3
ABANDON_S = 10   # how long a failed start's process group gets to end before it is killed
ENV_KEPT = frozenset({"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME"})
ENV_KEPT_PREFIXES = ("SERVING_", "TF_", "OMP_", "MKL_", "OPENBLAS_", "LC_")


def server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a model server starts with: an allow-list. The pipeline's own (AWS, MLflow and
    Prefect credentials, PIPELINE_*) never reaches the serving process."""
    return {k: v for k, v in environ.items() if k in ENV_KEPT or k.startswith(ENV_KEPT_PREFIXES)}


def link_current(base: Path, version: str) -> None:
    """Point ``current`` at the release now served and ``venv`` at its environment (relative links,
    replaced atomically): the stable paths the ml-pipeline-api systemd unit starts the server from."""
    links = {"current": Path("releases") / version}
    venv = release_venv(base, version)
    if venv is not None:
        links["venv"] = Path("venvs") / venv.name
    for name, target in links.items():
        part = base / f".{name}.{os.getpid()}.link"
        part.unlink(missing_ok=True)
        part.symlink_to(target)
        os.replace(part, base / name)


def start(base: Path, version: str, host: str, port: int, python: str | None, timeout: float,
          metadata_sha256: str | None = None, workers: str | None = None) -> dict:
    """Hot-load ``version`` into the running server, or start one detached and wait for /health.

    A server started here runs ``workers`` server processes (a number, or auto: one per CPU; None: the
    server's default for a shared state file, auto), which gunicorn's master replaces when one dies; they
    serve run/serving-state.json and stay in step through it. The start waits until every worker serves.
    ``workers`` is also written to run/server.env, which the systemd unit reads. Without ``python`` it runs
    in the release's environment.

    Raises:
        HostError: the load was refused, the port is taken by something else, or the server did not become
            healthy within ``timeout`` (then nothing of it is left running).
    """
    token = admin_token(base)
    model = model_dir(base, version)
    pid = server_pid(base)
    running = server_health(host, port) if pid is None and not port_free(host, port) else None
    if pid is not None or running is not None:
        result = _hot_load(host, port, version, model, token, timeout, metadata_sha256, running, pid)
    else:
        result = _launch(base, version, host, port, model, python, timeout, workers)
    link_current(base, version)
    return result


def _hot_load(host: str, port: int, version: str, model: Path, token: str, timeout: float,
              metadata_sha256: str | None, running: dict | None, pid: int | None) -> dict:
    """Load ``version`` into the server already running on ``host``:``port`` (``pid``: one this agent
    started; ``running``: the /health of one it did not)."""
    current = running if running is not None else health(host, port)
    # A server just (re)started by systemd may still be starting workers: load once all of them run,
    # so that the load reaches every one (bounded; the smoke test names any that still lag).
    deadline = time.monotonic() + timeout
    while not all_workers_serving(current, agreeing=False) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        current = health(host, port)
    status, body = call(host, port, "POST", load_query(model, version, metadata_sha256), token)
    if status != 200:
        raise HostError(f"/load of version {version} refused ({status}): {body.get('detail')}")
    # body["workers"]: which server processes serve it now (the smoke test checks that they all do)
    return {"action": "hot-load", "pid": pid, "previous_version": current.get("default_version"),
            "default_version": version, "workers": body.get("workers")}


def _write_server_env(run: Path, workers: str | None) -> None:
    if workers is not None:
        atomic_write(run / SERVER_ENV, f"SERVING_WORKERS={workers}\n")
    else:
        (run / SERVER_ENV).unlink(missing_ok=True)


def _launch(base: Path, version: str, host: str, port: int, model: Path, python: str | None, timeout: float,
            workers: str | None) -> dict:
    """Start a server detached, record it, and wait until every worker serves."""
    if not port_free(host, port):
        raise HostError(f"port {port} is in use by another process; the server cannot start")
    if python is None:
        python = ensure_venv(base, version, timeout=max(timeout, VENV_TIMEOUT_S))["python"]
    run = run_dir(base)
    # A fresh start serves the version asked for, not what a server that died long ago last served.
    (run / STATE_FILE).unlink(missing_ok=True)
    _write_server_env(run, workers)
    env = {**server_env(os.environ), "SERVING_ADMIN_TOKEN_FILE": str(run / TOKEN_FILE),
           "SERVING_STATE_FILE": str(run / STATE_FILE), "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [python, "-m", "serving", "--host", host, "--port", str(port), "--model-root", str(base / "releases"),
            "--model-dir", str(model), "--version", version, *(["--workers", str(workers)] if workers else [])]
    with open(run / SERVER_LOG, "ab") as log:   # the server keeps its own descriptor of the log
        proc = subprocess.Popen(argv, cwd=release_dir(base, version), env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    record_server(run, proc.pid, host, port, version)
    served = _wait_healthy(run, proc, host, port, timeout)
    return {"action": "start", "pid": proc.pid, "previous_version": None, "default_version": version,
            "workers": (served.get("workers") or {}).get("count", 1)}


def _wait_healthy(run: Path, proc: subprocess.Popen, host: str, port: int, timeout: float) -> dict:
    """The /health of the server just started, once every worker serves.

    Raises:
        HostError: it exited, or was not healthy within ``timeout`` (its process group is ended).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _abandon(run, proc)
            tail = (run / SERVER_LOG).read_text(errors="replace")[-1500:]
            raise HostError(f"server exited with {proc.returncode} during start-up:\n{tail}")
        try:
            status, answer = call(host, port, "GET", "/health", timeout=2)
            if status == 200 and all_workers_serving(answer):
                return answer
        except OSError:
            pass
        time.sleep(POLL_S)
    _abandon(run, proc)
    raise HostError(f"server did not become healthy within {timeout:.0f}s (stopped it); see {run / SERVER_LOG}")


def _abandon(run: Path, proc: subprocess.Popen) -> None:
    """A start that failed leaves nothing behind: the server's process group ends, the pid file goes."""
    terminate_group(proc.pid, timeout=ABANDON_S)
    try:
        proc.wait(timeout=ABANDON_S)
    except subprocess.TimeoutExpired:
        pass
    forget_server(run)


def activate(base: Path, version: str, host: str, port: int, metadata_sha256: str | None = None) -> dict:
    """Make ``version`` the default: switch if loaded, otherwise load it from releases/<version>/.

    Raises:
        HostError: the server refused.
    """
    token = admin_token(base)
    if version in (health(host, port).get("loaded_versions") or []):
        status, body = call(host, port, "POST", default_query(version), token)
    else:
        status, body = call(host, port, "POST", load_query(model_dir(base, version), version, metadata_sha256),
                            token)
    if status != 200:
        raise HostError(f"could not make version {version} the default ({status}): {body.get('detail')}")
    link_current(base, version)
    return {"action": "activate", "default_version": version}


def stop(base: Path, timeout: float = 30) -> dict:
    """Stop the server this host started (its process group); a stale pid file is removed, nothing signalled."""
    run = run_dir(base)
    pid = pid_file(base)
    reason = not_our_server(base, pid) if pid is not None else None
    if pid is None or reason is not None:
        forget_server(run)
        out = {"action": "stop", "was_running": False}
        if reason is not None:
            out["note"] = f"stale run/{PID_FILE} ignored and removed, nothing signalled: {reason}"
        return out
    terminate_group(os.getpgid(pid), timeout)
    forget_server(run)
    return {"action": "stop", "was_running": True, "pid": pid}


def status(base: Path, host: str, port: int) -> dict:
    """Whether this host's server runs, what it serves, and the releases unpacked here."""
    pid = server_pid(base)
    out = {"running": pid is not None, "pid": pid, "releases": releases(base)}
    if pid is None:
        return out
    try:
        code, answer = call(host, port, "GET", "/health", timeout=5)
    except OSError as exc:
        return out | {"health": "unreachable", "error": str(exc)}
    return out | {"health": answer.get("status"), "default_version": answer.get("default_version"),
                  "loaded_versions": answer.get("loaded_versions"), "http_status": code}
