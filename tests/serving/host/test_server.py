"""serving/host/server.py: start, stop and status with stand-in processes (sleep, stub interpreters) and a
stand-in server on an address of its own."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from serving.host import layout, server
from serving.host.cli import main
from serving.host.errors import HostError
from testkit.net import free_port
from tests.serving.host.conftest import ADDRESS

pytestmark = pytest.mark.unit


def _running(pid: int) -> bool:
    """Whether ``pid`` runs, read from /proc (a zombie, exited but not reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    """The pids still running once all have ended or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _main(capsys, *argv: str) -> dict:
    code = main(list(argv))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == (0 if out["ok"] else 1)
    return out


@pytest.mark.faults
@pytest.mark.parametrize("record", ["none", "reused"])
def test_stop_never_signals_a_process_that_took_a_stale_pid(tmp_path, session, record):
    """The pid file names a process that is not the server (a reused pid): stop leaves it alone."""
    unrelated = session("sleep", "300")
    run = tmp_path / "run"
    run.mkdir()
    (run / "server.pid").write_text(str(unrelated.pid))
    if record == "reused":    # the server that had this pid started at another time
        (run / "server.json").write_text(json.dumps({"pid": unrelated.pid, "started_at": "1", "port": 8000}))
    result = server.stop(tmp_path, timeout=2)
    assert unrelated.poll() is None and _running(unrelated.pid)
    assert result["was_running"] is False and "stale" in result["note"] and str(unrelated.pid) in result["note"]
    assert not (run / "server.pid").exists() and not (run / "server.json").exists()
    assert server.status(tmp_path, "127.0.0.1", 8000)["running"] is False


def test_stop_ends_the_recorded_server_and_its_process_group(tmp_path, session):
    proc = session("sh", "-c", f"sleep 300 & echo $! > {tmp_path / 'child'}; wait")
    run = tmp_path / "run"
    run.mkdir()
    layout.record_server(run, proc.pid, "127.0.0.1", 8000, "1")
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child").read_text())
    assert server.status(tmp_path, "127.0.0.1", free_port())["pid"] == proc.pid
    result = server.stop(tmp_path, timeout=5)
    assert result == {"action": "stop", "was_running": True, "pid": proc.pid}
    assert proc.wait(timeout=10) is not None and _wait_gone([child]) == []
    assert not (run / "server.pid").exists()


def test_stop_still_ends_a_server_an_older_host_py_recorded(tmp_path, session):
    """server.json without a start time (an older host.py): the server is recognised by its command line."""
    proc = session(sys.executable, "-c", "import time; time.sleep(300)", "--model-root", str(tmp_path / "releases"))
    # Popen returns once the child's exec closed its close-on-exec pipe, a moment before the kernel has set
    # up the new program's arguments: on a busy machine /proc/<pid>/cmdline can still be empty then.
    deadline = time.monotonic() + 10
    while b"--model-root" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    run = tmp_path / "run"
    run.mkdir()
    (run / "server.pid").write_text(str(proc.pid))
    (run / "server.json").write_text(json.dumps({"port": 8000, "host": "127.0.0.1", "started_from": "1"}))
    assert server.stop(tmp_path, timeout=5)["was_running"] is True
    assert proc.wait(timeout=10) is not None


def _release(base: Path, version: str = "1") -> Path:
    release = base / "releases" / version
    (release / "model" / "m").mkdir(parents=True)
    (release / "requirements.txt").write_text("fastapi==0.150.0\n")
    return release


@pytest.mark.faults
def test_a_start_that_times_out_leaves_nothing_running(tmp_path):
    """The server never answers /health: after the HostError its whole process group is gone."""
    _release(tmp_path)
    pids = tmp_path / "pids"
    never_listens = tmp_path / "python"
    never_listens.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    never_listens.chmod(0o755)
    # A second is plenty for sh to start and write both pids (milliseconds); the test waits the whole timeout.
    with pytest.raises(HostError, match="did not become healthy within 1s"):
        server.start(tmp_path, "1", "127.0.0.1", free_port(), str(never_listens), timeout=1)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    assert _wait_gone(started) == []
    assert not (tmp_path / "run" / "server.pid").exists()


def test_a_server_this_script_did_not_start_on_the_address_is_hot_loaded(base, stand_in):
    """A server (e.g. the systemd unit's) already binds the target's address: ``start`` loads into it rather
    than starting a second one — the interpreter given here would fail at once if it were run."""
    result = server.start(base, "1", ADDRESS, stand_in.port, python="/bin/false", timeout=5)
    assert result["action"] == "hot-load" and result["previous_version"] == "1"
    assert any(m == "POST" and p.startswith("/load?") for m, p in stand_in.calls)


STUB_SERVER = """
import argparse, json
from http.server import BaseHTTPRequestHandler, HTTPServer
parser = argparse.ArgumentParser()
parser.add_argument("-m")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        raw = json.dumps({"status": "ok", "default_version": "1", "loaded_versions": ["1"]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *a):
        pass

HTTPServer((args.host, args.port), Handler).serve_forever()
"""


def test_a_server_started_on_another_address_is_seen_healthy(base, tmp_path, capsys):
    """``start`` launches the server bound to the target's address and waits for its /health there."""
    stub = tmp_path / "stub_server.py"
    stub.write_text(STUB_SERVER)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {stub} \"$@\"\n")
    python.chmod(0o755)
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        port = s.getsockname()[1]
    try:
        result = server.start(base, "1", ADDRESS, port, str(python), timeout=10)
        assert result["action"] == "start"
        with pytest.raises(ConnectionRefusedError):    # bound to its own address only
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        out = _main(capsys, "status", "--base-dir", str(base), "--host", ADDRESS, "--port", str(port))
        assert out["running"] and out["health"] == "ok" and out["pid"] == result["pid"]
    finally:
        server.stop(base, timeout=5)
