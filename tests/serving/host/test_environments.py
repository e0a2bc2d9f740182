"""serving/host/environments.py: a release's environment, with a stand-in interpreter for pip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serving.host import environments
from serving.host.errors import HostError

pytestmark = pytest.mark.unit


def _release(base: Path, version: str = "1") -> Path:
    release = base / "releases" / version
    (release / "model" / "m").mkdir(parents=True)
    (release / "requirements.txt").write_text("fastapi==0.150.0\n")
    return release


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

    monkeypatch.setattr(environments.subprocess, "run", run)


@pytest.mark.faults
def test_a_pip_timeout_is_a_host_error_and_leaves_no_half_built_venv(tmp_path, monkeypatch):
    release = _release(tmp_path)
    _stub_venv(monkeypatch, "#!/bin/sh\nexec sleep 300\n")
    with pytest.raises(HostError, match=f"environment for {release / 'requirements.txt'} took longer than 1s"):
        environments.ensure_venv(tmp_path, "1", timeout=1)
    assert [p.name for p in (tmp_path / "venvs").iterdir()] == [".lock"]


def test_the_venv_installs_with_the_bundled_constraints(tmp_path, monkeypatch):
    """pip gets ``-c constraints.txt``; the environment's name covers the constraints too."""
    release = _release(tmp_path)
    (release / "constraints.txt").write_text("starlette==0.50.0\n")
    argv = tmp_path / "pip-argv"
    _stub_venv(monkeypatch, f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {argv}\n")
    first = environments.ensure_venv(tmp_path, "1", timeout=60)
    args = argv.read_text().split("\n")
    assert args[:3] == ["-m", "pip", "install"]
    assert args[args.index("-r") + 1] == str(release / "requirements.txt")
    assert args[args.index("-c") + 1] == str(release / "constraints.txt")
    (release / "constraints.txt").write_text("starlette==0.50.1\n")
    again = environments.ensure_venv(tmp_path, "1", timeout=60)
    assert again["created"] and again["python"] != first["python"]
    assert environments.release_venv(tmp_path, "1") == Path(again["python"]).parent.parent
