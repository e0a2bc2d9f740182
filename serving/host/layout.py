"""The host's base directory: where bundles, releases and environments live, and the running server's record.

    incoming/<name>-<version>.zip bundles as transferred
    releases/<version>/           unpacked bundles (MANIFEST-checked)
    run/server.pid, run/server.log, run/admin_token (0600), run/server.json, run/server.env
    run/serving-state.json        what the server serves (rewritten by it after every admin change)
    current -> releases/<v>, venv -> venvs/<digest>   the release last started or loaded, and its
                                  environment: what the ml-pipeline-api systemd unit runs
    venvs/<digest>/               the servers' environments (requirements + constraints)
    bin/host-agent.pyz            this agent, as the pipeline shipped it

run/server.json records the server's pid with its start time (/proc/<pid>/stat field 22): a pid file whose
process has another start time is a reused pid, and is never signalled.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from serving.contract.files import atomic_write, locked
from serving.host.errors import HostError
from serving.host.processes import alive, command_line, started_at

STATE_FILE = "serving-state.json"   # what the server serves; a replaced server process serves it again
TOKEN_FILE = "admin_token"
SERVER_RECORD = "server.json"
PID_FILE = "server.pid"
SERVER_LOG = "server.log"
SERVER_ENV = "server.env"   # SERVING_WORKERS for the systemd unit


def run_dir(base: Path) -> Path:
    """run/ under ``base``, created on first use."""
    run = base / "run"
    run.mkdir(parents=True, exist_ok=True)
    return run


def release_dir(base: Path, version: str) -> Path:
    return base / "releases" / version


def releases(base: Path) -> list[str]:
    """The versions unpacked on this host, oldest first."""
    folder = base / "releases"
    if not folder.exists():
        return []
    return sorted((p.name for p in folder.iterdir() if p.name.isdigit()), key=int)


def model_dir(base: Path, version: str) -> Path:
    """The one model directory of an unpacked release.

    Raises:
        HostError: the release holds no model directory, or several.
    """
    models = release_dir(base, version) / "model"
    names = [p for p in models.iterdir() if p.is_dir()] if models.exists() else []
    if len(names) != 1:
        raise HostError(f"{models}: expected exactly one model directory")
    return names[0]


def admin_token(base: Path) -> str:
    """This host's admin token (run/admin_token, 0600), made on first use; it never leaves the host."""
    path = run_dir(base) / TOKEN_FILE
    if not path.exists():
        # Two agents starting at once must agree on one token: the second waits, then reads the first's.
        with locked(path.with_name(f".{TOKEN_FILE}.lock")):
            if not path.exists():
                atomic_write(path, secrets.token_urlsafe(32), mode=0o600)
    return path.read_text().strip()


def record_server(run: Path, pid: int, host: str, port: int, version: str) -> None:
    """Remember the server just started: server.json (pid and start time) first, then the pid file."""
    record = {"pid": pid, "started_at": started_at(pid), "port": port, "host": host, "started_from": version}
    atomic_write(run / SERVER_RECORD, json.dumps(record))
    atomic_write(run / PID_FILE, str(pid))


def forget_server(run: Path) -> None:
    (run / PID_FILE).unlink(missing_ok=True)
    (run / SERVER_RECORD).unlink(missing_ok=True)


def _read_record(base: Path) -> dict:
    try:
        record = json.loads((run_dir(base) / SERVER_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def not_our_server(base: Path, pid: int) -> str | None:
    """Why the process ``pid`` is not the server this host started (None: it is)."""
    if not alive(pid):
        return f"process {pid} is not running"
    record = _read_record(base)
    if record.get("pid") == pid and "started_at" in record:
        if record["started_at"] == started_at(pid):
            return None
        return (f"process {pid} started at tick {started_at(pid)}, the server recorded in run/server.json at "
                f"tick {record['started_at']}: the pid was reused by another process")
    # Recorded by an older agent (no start time): recognise its server by the command line.
    argv = command_line(pid)
    if "--model-root" in argv and str(base / "releases") in argv:
        return None
    return f"process {pid} is not a model server started from {base} (no matching run/server.json)"


def pid_file(base: Path) -> int | None:
    """The pid run/server.pid names, whoever runs it now (None: no readable pid file)."""
    try:
        return int((run_dir(base) / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def server_pid(base: Path) -> int | None:
    """The running server's pid: the pid file's process, if it is the server recorded in run/server.json."""
    pid = pid_file(base)
    return None if pid is None or not_our_server(base, pid) else pid
