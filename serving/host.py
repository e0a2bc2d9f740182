"""Host-side release operations: ``python -m serving.host COMMAND --base-dir DIR …``.

Runs on the target host (locally, or over SSH) with the standard library and this
package only, and prints one JSON object. Layout under the base directory:

    incoming/<name>-<version>.zip bundles as transferred
    releases/<version>/           unpacked bundles (MANIFEST-checked)
    run/server.pid, run/server.log, run/admin_token (0600), run/server.json
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


def _http(port: int, method: str, path: str, token: str | None = None, body: bytes | None = None,
          timeout: float = 120) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
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


def _pid(base: Path) -> int | None:
    path = _run_dir(base) / "server.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


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
    """Download a bundle (e.g. a presigned S3 URL) into incoming/, keeping it only if the SHA-256 matches."""
    import urllib.request

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


def ensure_venv(base: Path, version: str, timeout: float) -> dict:
    """The virtual environment for a release's requirements: created once, reused while they are unchanged.

    Environments live in venvs/<first 16 hex of the requirements' SHA-256>/ and appear atomically
    (built beside, then renamed; ``python -m …`` keeps working after the rename).
    """
    import fcntl

    requirements = base / "releases" / version / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    venvs = base / "venvs"
    venvs.mkdir(parents=True, exist_ok=True)
    venv = venvs / digest
    with open(venvs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".ready").exists():
            return {"python": str(venv / "bin" / "python"), "created": False, "requirements_sha256": digest}
        building = venvs / f".{digest}.building"
        shutil.rmtree(building, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True,
                           timeout=timeout)
            subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r",
                            str(requirements)], check=True, capture_output=True, timeout=timeout)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise HostError(f"creating the environment for {requirements} failed: "
                            f"{(exc.stderr or b'').decode(errors='replace')[-800:]}") from None
        (building / ".ready").write_text(digest)
        os.replace(building, venv)
    return {"python": str(venv / "bin" / "python"), "created": True, "requirements_sha256": digest}


def _model_dir(base: Path, version: str) -> Path:
    models = base / "releases" / version / "model"
    names = [p for p in models.iterdir() if p.is_dir()] if models.exists() else []
    if len(names) != 1:
        raise HostError(f"{models}: expected exactly one model directory")
    return names[0]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


ENV_KEPT = frozenset({"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME"})
ENV_KEPT_PREFIXES = ("SERVING_", "TF_", "OMP_", "MKL_", "OPENBLAS_", "LC_")


def server_env(environ) -> dict[str, str]:
    """The environment a model server starts with: an allow-list. The pipeline's own (AWS, MLflow and
    Prefect credentials, PIPELINE_*) never reaches the serving process."""
    return {k: v for k, v in environ.items() if k in ENV_KEPT or k.startswith(ENV_KEPT_PREFIXES)}


def start(base: Path, version: str, host: str, port: int, python: str | None, timeout: float) -> dict:
    """Hot-load ``version`` into the running server, or start one detached and wait for /health.

    Without ``python`` the server runs in the release's virtual environment (``ensure_venv``).
    """
    token = _token(base)
    model_dir = _model_dir(base, version)
    pid = _pid(base)
    if pid is not None:
        _status, health = _http(port, "GET", "/health", timeout=10)
        previous = health.get("default_version")
        status, body = _http(port, "POST", "/load?" + urlencode({"model_dir": model_dir, "version": version}), token)
        if status != 200:
            raise HostError(f"/load of version {version} refused ({status}): {body.get('detail')}")
        return {"action": "hot-load", "pid": pid, "previous_version": previous, "default_version": version}
    if not _port_free(port):
        raise HostError(f"port {port} is in use by another process; the server cannot start")
    if python is None:
        python = ensure_venv(base, version, timeout=max(timeout, 1800))["python"]
    run = _run_dir(base)
    env = {**server_env(os.environ), "SERVING_ADMIN_TOKEN": token, "TF_CPP_MIN_LOG_LEVEL": "3"}
    release = base / "releases" / version
    log = open(run / "server.log", "ab")
    proc = subprocess.Popen([python, "-m", "serving", "--host", host, "--port", str(port),
                             "--model-root", str(base / "releases"), "--model-dir", str(model_dir),
                             "--version", version], cwd=release, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (run / "server.pid").write_text(str(proc.pid))
    (run / "server.json").write_text(json.dumps({"port": port, "host": host, "started_from": version}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (run / "server.pid").unlink(missing_ok=True)
            tail = (run / "server.log").read_text(errors="replace")[-1500:]
            raise HostError(f"server exited with {proc.returncode} during start-up:\n{tail}")
        try:
            status, health = _http(port, "GET", "/health", timeout=2)
            if status == 200:
                return {"action": "start", "pid": proc.pid, "previous_version": None, "default_version": version}
        except OSError:
            pass
        time.sleep(0.3)
    raise HostError(f"server did not become healthy within {timeout:.0f}s; see {run / 'server.log'}")


def activate(base: Path, version: str, port: int) -> dict:
    """Make ``version`` the default: switch if loaded, otherwise load it from releases/<version>/."""
    token = _token(base)
    _status, health = _http(port, "GET", "/health", timeout=10)
    if version in (health.get("loaded_versions") or []):
        status, body = _http(port, "POST", "/default?" + urlencode({"version": version}), token)
    else:
        status, body = _http(port, "POST", "/load?" + urlencode({"model_dir": _model_dir(base, version),
                                                                 "version": version}), token)
    if status != 200:
        raise HostError(f"could not make version {version} the default ({status}): {body.get('detail')}")
    return {"action": "activate", "default_version": version}


def stop(base: Path, timeout: float = 30) -> dict:
    pid = _pid(base)
    if pid is None:
        (_run_dir(base) / "server.pid").unlink(missing_ok=True)
        return {"action": "stop", "was_running": False}
    os.killpg(os.getpgid(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(base) is not None:
        time.sleep(0.2)
    if _pid(base) is not None:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    (_run_dir(base) / "server.pid").unlink(missing_ok=True)
    return {"action": "stop", "was_running": True, "pid": pid}


def status(base: Path, port: int) -> dict:
    pid = _pid(base)
    out = {"running": pid is not None, "pid": pid, "releases": sorted(
        (p.name for p in (base / "releases").iterdir() if p.name.isdigit()), key=int)
        if (base / "releases").exists() else []}
    if pid is not None:
        try:
            code, health = _http(port, "GET", "/health", timeout=5)
            out |= {"health": health.get("status"), "default_version": health.get("default_version"),
                    "loaded_versions": health.get("loaded_versions"), "http_status": code}
        except OSError as exc:
            out |= {"health": "unreachable", "error": str(exc)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.host", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["fetch", "unpack", "ensure-venv", "start", "activate", "stop",
                                            "status"])
    parser.add_argument("--url")
    parser.add_argument("--sha256")
    parser.add_argument("--name")
    parser.add_argument("--base-dir", required=True, type=Path)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--version")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--python", default=None, help="interpreter for the server (default: the release's venv)")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    base = args.base_dir.resolve()
    try:
        if args.command == "fetch":
            result = fetch(base, args.url, args.sha256, args.name, args.timeout)
        elif args.command == "unpack":
            result = unpack(base, args.bundle, args.version)
        elif args.command == "ensure-venv":
            result = ensure_venv(base, args.version, args.timeout)
        elif args.command == "start":
            result = start(base, args.version, args.host, args.port, args.python, args.timeout)
        elif args.command == "activate":
            result = activate(base, args.version, args.port)
        elif args.command == "stop":
            result = stop(base)
        else:
            result = status(base, args.port)
    except (HostError, OSError, ValueError, zipfile.BadZipFile) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps({"ok": True, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
