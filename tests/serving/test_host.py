"""serving/host/agent.py's process and environment handling, with stand-in processes (sleep, stub interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.host import agent as host
from testkit.net import free_port

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


@pytest.fixture
def session():
    """Start processes in sessions of their own (as the server runs); all of them end with the test."""
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        procs.append(subprocess.Popen(list(argv), start_new_session=True))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


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
    result = host.stop(tmp_path, timeout=2)
    assert unrelated.poll() is None and _running(unrelated.pid)
    assert result["was_running"] is False and "stale" in result["note"] and str(unrelated.pid) in result["note"]
    assert not (run / "server.pid").exists() and not (run / "server.json").exists()
    assert host.status(tmp_path, "127.0.0.1", 8000)["running"] is False


def test_stop_ends_the_recorded_server_and_its_process_group(tmp_path, session):
    server = session("sh", "-c", f"sleep 300 & echo $! > {tmp_path / 'child'}; wait")
    run = tmp_path / "run"
    run.mkdir()
    host._record_server(run, server.pid, "127.0.0.1", 8000, "1")
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child").read_text())
    assert host.status(tmp_path, "127.0.0.1", free_port())["pid"] == server.pid
    result = host.stop(tmp_path, timeout=5)
    assert result == {"action": "stop", "was_running": True, "pid": server.pid}
    assert server.wait(timeout=10) is not None and _wait_gone([child]) == []
    assert not (run / "server.pid").exists()


def test_stop_still_ends_a_server_an_older_host_py_recorded(tmp_path, session):
    """server.json without a start time (an older host.py): the server is recognised by its command line."""
    server = session(sys.executable, "-c", "import time; time.sleep(300)", "--model-root", str(tmp_path / "releases"))
    # Popen returns once the child's exec closed its close-on-exec pipe, a moment before the kernel has set
    # up the new program's arguments: on a busy machine /proc/<pid>/cmdline can still be empty then.
    deadline = time.monotonic() + 10
    while b"--model-root" not in Path(f"/proc/{server.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    run = tmp_path / "run"
    run.mkdir()
    (run / "server.pid").write_text(str(server.pid))
    (run / "server.json").write_text(json.dumps({"port": 8000, "host": "127.0.0.1", "started_from": "1"}))
    assert host.stop(tmp_path, timeout=5)["was_running"] is True
    assert server.wait(timeout=10) is not None


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
    with pytest.raises(host.HostError, match="did not become healthy within 3s"):
        host.start(tmp_path, "1", "127.0.0.1", free_port(), str(never_listens), timeout=3)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    assert _wait_gone(started) == []
    assert not (tmp_path / "run" / "server.pid").exists()


def _stub_venv(monkeypatch, stub: str) -> None:
    """``python -m venv`` makes an environment whose interpreter is the shell script ``stub`` (so pip is
    the stub too); every other command runs for real."""
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if list(cmd[1:3]) == ["-m", "venv"]:
            python = Path(cmd[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text(stub)
            python.chmod(0o755)
            return subprocess.CompletedProcess(cmd, 0, b"", b"")
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(host.subprocess, "run", run)


@pytest.mark.faults
def test_a_pip_timeout_is_a_host_error_and_leaves_no_half_built_venv(tmp_path, monkeypatch):
    release = _release(tmp_path)
    _stub_venv(monkeypatch, "#!/bin/sh\nexec sleep 300\n")
    with pytest.raises(host.HostError, match=f"environment for {release / 'requirements.txt'} took longer than 1s"):
        host.ensure_venv(tmp_path, "1", timeout=1)
    assert [p.name for p in (tmp_path / "venvs").iterdir()] == [".lock"]


def test_the_venv_installs_with_the_bundled_constraints(tmp_path, monkeypatch):
    """pip gets ``-c constraints.txt``; the environment's name covers the constraints too."""
    release = _release(tmp_path)
    (release / "constraints.txt").write_text("starlette==0.50.0\n")
    argv = tmp_path / "pip-argv"
    _stub_venv(monkeypatch, f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {argv}\n")
    first = host.ensure_venv(tmp_path, "1", timeout=60)
    args = argv.read_text().split("\n")
    assert args[:3] == ["-m", "pip", "install"]
    assert args[args.index("-r") + 1] == str(release / "requirements.txt")
    assert args[args.index("-c") + 1] == str(release / "constraints.txt")
    (release / "constraints.txt").write_text("starlette==0.50.1\n")
    again = host.ensure_venv(tmp_path, "1", timeout=60)
    assert again["created"] and again["python"] != first["python"]


def test_ensure_venv_with_a_given_interpreter_builds_nothing(tmp_path, capsys):
    _release(tmp_path)
    assert host.main(["ensure-venv", "--base-dir", str(tmp_path), "--version", "1", "--python", sys.executable]) == 0
    assert json.loads(capsys.readouterr().out)["python"] == sys.executable
    assert not (tmp_path / "venvs").exists()
