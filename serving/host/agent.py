"""Host-side release operations: ``python -m serving.host.agent COMMAND --base-dir DIR …``.

Runs on the target host (locally, or over SSH) with the standard library and this
package only, and prints one JSON object. Layout under the base directory:

    incoming/<name>-<version>.zip bundles as transferred
    releases/<version>/           unpacked bundles (MANIFEST-checked)
    run/server.pid, run/server.log, run/admin_token (0600), run/server.json,
    run/serving-state.json        what the server serves (rewritten by it after every admin change)
    current -> releases/<v>, venv -> venvs/<digest>   the release last started or loaded, and its
                                  environment: what the ml-pipeline-api systemd unit runs
    venvs/<digest>/               the servers' environments (requirements + constraints)

run/server.json records the server's pid with its start time (/proc/<pid>/stat field 22):
a pid file whose process has another start time is a reused pid, and is never signalled.
``fetch`` reads its URL from stdin: a presigned URL is a credential, and ``ps`` shows arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urlencode

MANIFEST = "MANIFEST"
STATE_FILE = "serving-state.json"   # what the server serves; a replaced server process serves it again
VENV_TIMEOUT_S = 1800   # a first environment build (pip install of TensorFlow) on a fresh host


class HostError(Exception):
    pass


def _run_dir(base: Path) -> Path:
    run = base / "run"
    run.mkdir(parents=True, exist_ok=True)
    return run


def _token(base: Path) -> str:
    path = _run_dir(base) / "admin_token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}   # noqa: S104 — bound to all: probe loopback


def _probe_address(host: str) -> str:
    """Where this host's own calls reach the server that binds ``host``: that address, or loopback when
    the server binds every address."""
    return WILDCARDS.get(host, host)


def _http(host: str, port: int, method: str, path: str, token: str | None = None, body: bytes | None = None,
          timeout: float = 120) -> tuple[int, dict]:
    """One call to the server that binds ``host``:``port``."""
    conn = http.client.HTTPConnection(_probe_address(host), port, timeout=timeout)
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


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on — index 0 is field 3 — or None without such a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()   # the command name (field 2) may hold spaces and parentheses


def _started_at(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (field 22): with the pid, it names one process."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) does not."""
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[0] != "Z"
    if Path("/proc/self/stat").exists():
        return False
    try:   # no /proc: the signal test is all there is
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies aside)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def _terminate_group(pgid: int, timeout: float) -> None:
    """SIGTERM a process group, then SIGKILL whatever of it is left after ``timeout``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _record_server(run: Path, pid: int, host: str, port: int, version: str) -> None:
    """Remember the server just started: server.json (pid and start time) first, then the pid file."""
    record = {"pid": pid, "started_at": _started_at(pid), "port": port, "host": host, "started_from": version}
    (run / "server.json").write_text(json.dumps(record))
    (run / "server.pid").write_text(str(pid))


def _forget_server(run: Path) -> None:
    (run / "server.pid").unlink(missing_ok=True)
    (run / "server.json").unlink(missing_ok=True)


def _not_our_server(base: Path, pid: int) -> str | None:
    """Why the process ``pid`` is not the server this host started (None: it is)."""
    if not _alive(pid):
        return f"process {pid} is not running"
    try:
        record = json.loads((_run_dir(base) / "server.json").read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("pid") == pid and "started_at" in record:
        if record["started_at"] == _started_at(pid):
            return None
        return (f"process {pid} started at tick {_started_at(pid)}, the server recorded in run/server.json at "
                f"tick {record['started_at']}: the pid was reused by another process")
    # Recorded by an older host.py (no start time): recognise its server by the command line.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    if "--model-root" in argv and str(base / "releases") in argv:
        return None
    return f"process {pid} is not a model server started from {base} (no matching run/server.json)"


def _pid(base: Path) -> int | None:
    """The running server's pid: the pid file's process, if it is the server recorded in run/server.json."""
    try:
        pid = int((_run_dir(base) / "server.pid").read_text())
    except (OSError, ValueError):
        return None
    return None if _not_our_server(base, pid) else pid


def _abandon(run: Path, proc: subprocess.Popen) -> None:
    """A start that failed leaves nothing behind: the server's process group ends, the pid file goes."""
    _terminate_group(proc.pid, timeout=10)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _forget_server(run)


def unpack(base: Path, bundle: Path, version: str) -> dict:
    """Check every entry against MANIFEST, then unpack into releases/<version>/ atomically."""
    dest = base / "releases" / version
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        if MANIFEST not in names:
            raise HostError(f"{bundle}: no MANIFEST")
        manifest_text = zf.read(MANIFEST).decode()
        manifest = dict(reversed(line.split("  ", 1)) for line in manifest_text.splitlines())
        if any(n.startswith("/") or ".." in Path(n).parts for n in names):
            raise HostError(f"{bundle}: an entry would escape the release directory")
        bad = [n for n, d in manifest.items() if n not in names or hashlib.sha256(zf.read(n)).hexdigest() != d]
        bad += sorted(set(names) - set(manifest) - {MANIFEST})
        if bad:
            raise HostError(f"{bundle}: checksum mismatch or unexpected files: {', '.join(bad[:10])}")
        if dest.exists():
            if (dest / MANIFEST).read_text() == manifest_text:
                return {"release_dir": str(dest), "reused": True}
            raise HostError(f"{dest} exists with different contents; refusing to overwrite a release")
        staging = dest.with_name(f".{version}.unpacking")
        shutil.rmtree(staging, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        zf.extractall(staging)
    os.replace(staging, dest)
    return {"release_dir": str(dest), "reused": False}


def fetch(base: Path, url: str, sha256: str, name: str, timeout: float) -> dict:
    """Download a bundle (e.g. a presigned S3 URL) into incoming/, keeping it only if the SHA-256 matches.

    The command line reads the URL from stdin (``main``): a presigned URL is a credential, and
    arguments are visible to every user of the host (``ps``).
    """
    import urllib.request

    if not url:
        raise HostError("fetch reads the bundle's URL from its standard input (never from the command line); "
                        "none was given")
    incoming = base / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    final = incoming / Path(name).name
    part = final.with_name(final.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:  # noqa: S310
        while block := resp.read(1 << 20):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise HostError(f"checksum mismatch: the fetched bundle hashes to {digest.hexdigest()[:12]}…, "
                        f"expected {sha256[:12]}…")
    os.replace(part, final)
    return {"path": str(final), "bytes": final.stat().st_size}


def _run_bounded(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; past ``timeout`` the whole group (pip's builds too) is killed.

    Raises:
        subprocess.CalledProcessError: it failed.
        subprocess.TimeoutExpired: it ran past ``timeout``.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _env_digest(requirements: Path, constraints: Path | None) -> str:
    """What names an environment: the requirements, and the constraints (pins) they are installed with."""
    digest = hashlib.sha256(requirements.read_bytes())
    if constraints is not None:
        digest.update(b"\0constraints.txt\0" + constraints.read_bytes())
    return digest.hexdigest()[:16]


def _venv_of(base: Path, version: str) -> tuple[Path, Path | None, Path]:
    """A release's requirements, its constraints (None: the bundle has none) and the environment they name."""
    release = base / "releases" / version
    requirements = release / "requirements.txt"
    constraints = release / "constraints.txt" if (release / "constraints.txt").exists() else None
    return requirements, constraints, base / "venvs" / _env_digest(requirements, constraints)


def ensure_venv(base: Path, version: str, timeout: float) -> dict:
    """The virtual environment for a release's requirements: created once, reused while they are unchanged.

    ``pip install -r requirements.txt -c constraints.txt``: the bundle's constraints pin every
    package the requirements pull in (a bundle without them installs the requirements alone).
    Environments live in venvs/<first 16 hex of the SHA-256 of both files>/ and appear atomically
    (built beside, then renamed; ``python -m …`` keeps working after the rename).

    Raises:
        HostError: pip failed or ran past ``timeout`` seconds (nothing half-built is left).
    """
    import fcntl

    requirements, constraints, venv = _venv_of(base, version)
    digest, venvs = venv.name, venv.parent
    venvs.mkdir(parents=True, exist_ok=True)
    with open(venvs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".ready").exists():
            return {"python": str(venv / "bin" / "python"), "created": False, "requirements_sha256": digest}
        building = venvs / f".{digest}.building"
        shutil.rmtree(building, ignore_errors=True)
        deadline = time.monotonic() + timeout
        try:
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True,
                           timeout=timeout)
            _run_bounded([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
                          str(requirements), *(["-c", str(constraints)] if constraints else [])],
                         timeout=max(deadline - time.monotonic(), 1))
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise HostError(f"creating the environment for {requirements} failed: "
                            f"{(exc.stderr or b'').decode(errors='replace')[-800:]}") from None
        except subprocess.TimeoutExpired:
            shutil.rmtree(building, ignore_errors=True)
            raise HostError(f"creating the environment for {requirements} took longer than {timeout:.0f}s "
                            "(pip install timed out; the half-built environment was removed); retry, or raise "
                            "the target's venv_timeout_s on a slow host") from None
        (building / ".ready").write_text(digest)
        os.replace(building, venv)
    return {"python": str(venv / "bin" / "python"), "created": True, "requirements_sha256": digest}


def _release_venv(base: Path, version: str) -> Path | None:
    """The built environment for a release's requirements, if there is one."""
    if not (base / "releases" / version / "requirements.txt").exists():
        return None
    venv = _venv_of(base, version)[2]
    return venv if (venv / ".ready").exists() else None


def _link_current(base: Path, version: str) -> None:
    """Point ``current`` at the release now served and ``venv`` at its environment (relative links,
    replaced atomically): the stable paths the ml-pipeline-api systemd unit starts the server from."""
    links = {"current": Path("releases") / version}
    venv = _release_venv(base, version)
    if venv is not None:
        links["venv"] = Path("venvs") / venv.name
    for name, target in links.items():
        part = base / f".{name}.{os.getpid()}.link"
        part.unlink(missing_ok=True)
        part.symlink_to(target)
        os.replace(part, base / name)


def _model_dir(base: Path, version: str) -> Path:
    models = base / "releases" / version / "model"
    names = [p for p in models.iterdir() if p.is_dir()] if models.exists() else []
    if len(names) != 1:
        raise HostError(f"{models}: expected exactly one model directory")
    return names[0]


def _port_free(host: str, port: int) -> bool:
    """Whether the server could bind ``host``:``port`` (what another process binds there, or on every address,
    takes it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


ENV_KEPT = frozenset({"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME"})
ENV_KEPT_PREFIXES = ("SERVING_", "TF_", "OMP_", "MKL_", "OPENBLAS_", "LC_")


def server_env(environ) -> dict[str, str]:
    """The environment a model server starts with: an allow-list. The pipeline's own (AWS, MLflow and
    Prefect credentials, PIPELINE_*) never reaches the serving process."""
    return {k: v for k, v in environ.items() if k in ENV_KEPT or k.startswith(ENV_KEPT_PREFIXES)}


def _load_query(model_dir: Path, version: str, metadata_sha256: str | None) -> str:
    query = {"model_dir": model_dir, "version": version}
    if metadata_sha256:
        query["metadata_sha256"] = metadata_sha256     # the server checks metadata.json against it
    return "/load?" + urlencode(query)


def _server_health(host: str, port: int) -> dict | None:
    """The /health of a model server (ours, started by systemd rather than by this script) on ``host``:``port``;
    None when what listens there is not one."""
    try:
        _status, health = _http(host, port, "GET", "/health", timeout=3)
    except OSError:
        return None
    return health if isinstance(health, dict) and "loaded_versions" in health else None


def _all_workers_serving(health: dict, agreeing: bool = True) -> bool:
    """Every server process of the host has started (and, ``agreeing``, they serve the same); an older
    server without a workers section is one process."""
    workers = health.get("workers")
    if not isinstance(workers, dict):
        return True
    started = workers.get("count", 0) >= (workers.get("expected") or 1)
    return started and (bool(workers.get("agree")) or not agreeing)


def start(base: Path, version: str, host: str, port: int, python: str | None, timeout: float,
          metadata_sha256: str | None = None, workers: str | None = None) -> dict:
    """Hot-load ``version`` into the running server, or start one detached and wait for /health.

    The running server is the one this script started (run/server.pid), or one its supervisor runs
    (the ml-pipeline-api systemd unit, reading this host's run/admin_token). A server started here
    runs under gunicorn's master with ``workers`` server processes (a number, or auto: one per CPU;
    None: the server's default, 1), which replaces a dead one; they serve run/serving-state.json and
    stay in step through it. The start waits until every worker serves. ``workers`` is also written
    to run/server.env, which the systemd unit reads.
    Without ``python`` it runs in the release's virtual environment.
    """
    token = _token(base)
    model_dir = _model_dir(base, version)
    pid = _pid(base)
    health = _server_health(host, port) if pid is None and not _port_free(host, port) else None
    if pid is not None or health is not None:
        if health is None:
            _status, health = _http(host, port, "GET", "/health", timeout=10)
        # A server just (re)started by systemd may still be starting workers: load once all of them run,
        # so that the load reaches every one (bounded; the smoke test names any that still lag).
        deadline = time.monotonic() + timeout
        while not _all_workers_serving(health, agreeing=False) and time.monotonic() < deadline:
            time.sleep(0.3)
            _status, health = _http(host, port, "GET", "/health", timeout=10)
        previous = health.get("default_version")
        status, body = _http(host, port, "POST", _load_query(model_dir, version, metadata_sha256), token)
        if status != 200:
            raise HostError(f"/load of version {version} refused ({status}): {body.get('detail')}")
        _link_current(base, version)
        # body["workers"]: which server processes serve it now (the smoke test checks that they all do)
        return {"action": "hot-load", "pid": pid, "previous_version": previous, "default_version": version,
                "workers": body.get("workers")}
    if not _port_free(host, port):
        raise HostError(f"port {port} is in use by another process; the server cannot start")
    if python is None:
        python = ensure_venv(base, version, timeout=max(timeout, VENV_TIMEOUT_S))["python"]
    run = _run_dir(base)
    # A fresh start serves the version asked for, not what a server that died long ago last served.
    (run / STATE_FILE).unlink(missing_ok=True)
    if workers is not None:
        (run / "server.env").write_text(f"SERVING_WORKERS={workers}\n")
    else:
        (run / "server.env").unlink(missing_ok=True)
    env = {**server_env(os.environ), "SERVING_ADMIN_TOKEN_FILE": str(run / "admin_token"),
           "SERVING_STATE_FILE": str(run / STATE_FILE), "TF_CPP_MIN_LOG_LEVEL": "3"}
    release = base / "releases" / version
    log = open(run / "server.log", "ab")
    proc = subprocess.Popen([python, "-m", "serving", "--host", host, "--port", str(port),
                             "--model-root", str(base / "releases"), "--model-dir", str(model_dir),
                             "--version", version, *(["--workers", str(workers)] if workers else [])],
                            cwd=release, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    _record_server(run, proc.pid, host, port, version)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _abandon(run, proc)
            tail = (run / "server.log").read_text(errors="replace")[-1500:]
            raise HostError(f"server exited with {proc.returncode} during start-up:\n{tail}")
        try:
            status, health = _http(host, port, "GET", "/health", timeout=2)
            if status == 200 and _all_workers_serving(health):
                _link_current(base, version)
                return {"action": "start", "pid": proc.pid, "previous_version": None, "default_version": version,
                        "workers": (health.get("workers") or {}).get("count", 1)}
        except OSError:
            pass
        time.sleep(0.3)
    _abandon(run, proc)
    raise HostError(f"server did not become healthy within {timeout:.0f}s (stopped it); see {run / 'server.log'}")


def activate(base: Path, version: str, host: str, port: int, metadata_sha256: str | None = None) -> dict:
    """Make ``version`` the default: switch if loaded, otherwise load it from releases/<version>/."""
    token = _token(base)
    _status, health = _http(host, port, "GET", "/health", timeout=10)
    if version in (health.get("loaded_versions") or []):
        status, body = _http(host, port, "POST", "/default?" + urlencode({"version": version}), token)
    else:
        query = _load_query(_model_dir(base, version), version, metadata_sha256)
        status, body = _http(host, port, "POST", query, token)
    if status != 200:
        raise HostError(f"could not make version {version} the default ({status}): {body.get('detail')}")
    _link_current(base, version)
    return {"action": "activate", "default_version": version}


def stop(base: Path, timeout: float = 30) -> dict:
    """Stop the server this host started (its process group); a stale pid file is removed, nothing signalled."""
    run = _run_dir(base)
    try:
        pid = int((run / "server.pid").read_text())
    except (OSError, ValueError):
        pid = None
    reason = _not_our_server(base, pid) if pid is not None else None
    if pid is None or reason is not None:
        _forget_server(run)
        out = {"action": "stop", "was_running": False}
        if reason is not None:
            out["note"] = f"stale run/server.pid ignored and removed, nothing signalled: {reason}"
        return out
    _terminate_group(os.getpgid(pid), timeout)
    _forget_server(run)
    return {"action": "stop", "was_running": True, "pid": pid}


def status(base: Path, host: str, port: int) -> dict:
    pid = _pid(base)
    out = {"running": pid is not None, "pid": pid, "releases": sorted(
        (p.name for p in (base / "releases").iterdir() if p.name.isdigit()), key=int)
        if (base / "releases").exists() else []}
    if pid is not None:
        try:
            code, health = _http(host, port, "GET", "/health", timeout=5)
            out |= {"health": health.get("status"), "default_version": health.get("default_version"),
                    "loaded_versions": health.get("loaded_versions"), "http_status": code}
        except OSError as exc:
            out |= {"health": "unreachable", "error": str(exc)}
    return out


def labelled(base: Path, host: str, port: int, version: str, since: float) -> dict:
    """The labelled rows the server holds for ``version`` (``GET /monitoring/labelled`` with this host's admin
    token, which never leaves the host)."""
    query = urlencode({"version": version, "since": since})
    try:
        code, body = _http(host, port, "GET", f"/monitoring/labelled?{query}", _token(base), timeout=60)
    except OSError as exc:
        raise HostError(f"the server at {host}:{port} did not answer for its labelled rows: {exc}") from None
    if code != 200:
        raise HostError(f"the server at {host}:{port} refused its labelled rows ({code}): {body.get('detail')}")
    return {"action": "labelled", **body}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.host.agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["fetch", "unpack", "ensure-venv", "start", "activate", "stop",
                                            "status", "labelled"])
    parser.add_argument("--sha256")
    parser.add_argument("--name")
    parser.add_argument("--base-dir", required=True, type=Path)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--version")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--python", default=None, help="interpreter for the server (default: the release's venv)")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--since", type=float, default=0.0, help="labelled: rows scored from (epoch seconds)")
    parser.add_argument("--workers", default=None,
                        help="start: server processes, a number or auto (one per CPU); default 1")
    parser.add_argument("--metadata-sha256", default=None,
                        help="what the registry recorded for the version's metadata.json (the server checks it)")
    args = parser.parse_args(argv)
    base = args.base_dir.resolve()
    try:
        if args.command == "fetch":
            result = fetch(base, sys.stdin.readline().strip(), args.sha256, args.name, args.timeout)
        elif args.command == "unpack":
            result = unpack(base, args.bundle, args.version)
        elif args.command == "ensure-venv" and args.python:
            result = {"python": args.python, "created": False, "note": "--python given: no environment needed"}
        elif args.command == "ensure-venv":
            result = ensure_venv(base, args.version, args.timeout)
        elif args.command == "start":
            result = start(base, args.version, args.host, args.port, args.python, args.timeout,
                           args.metadata_sha256, args.workers)
        elif args.command == "activate":
            result = activate(base, args.version, args.host, args.port, args.metadata_sha256)
        elif args.command == "stop":
            result = stop(base)
        elif args.command == "labelled":
            result = labelled(base, args.host, args.port, args.version, args.since)
        else:
            result = status(base, args.host, args.port)
    except (HostError, OSError, ValueError, zipfile.BadZipFile) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps({"ok": True, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
