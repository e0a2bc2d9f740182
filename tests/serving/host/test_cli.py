"""serving/host/cli.py: one JSON object per command, on the address the server binds; the same command line
through ``python -m serving.host``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serving.host.cli import COMMANDS, main, parser
from tests.conftest import ROOT
from tests.serving.host.conftest import ADDRESS

pytestmark = pytest.mark.unit


def _main(capsys, *argv: str) -> dict:
    code = main(list(argv))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == (0 if out["ok"] else 1)
    return out


def test_status_asks_the_server_on_its_own_address(base, stand_in, recorded, capsys):
    out = _main(capsys, "status", "--base-dir", str(base), "--host", ADDRESS, "--port", str(stand_in.port))
    assert out["running"] and out["health"] == "ok" and out["default_version"] == "1"
    assert ("GET", "/health") in stand_in.calls


def test_activate_and_labelled_reach_the_server_on_its_own_address(base, stand_in, capsys):
    where = ["--base-dir", str(base), "--host", ADDRESS, "--port", str(stand_in.port)]
    assert _main(capsys, "activate", *where, "--version", "1")["default_version"] == "1"
    assert _main(capsys, "labelled", *where, "--version", "1")["action"] == "labelled"
    assert [c for c in stand_in.calls if c[0] == "POST"] == [("POST", "/default?version=1")]
    assert ("GET", "/monitoring/labelled?version=1&since=0.0") in stand_in.calls
    assert (base / "current").resolve() == (base / "releases" / "1").resolve()


def test_ensure_venv_with_a_given_interpreter_builds_nothing(tmp_path, capsys):
    release = tmp_path / "releases" / "1"
    (release / "model" / "m").mkdir(parents=True)
    (release / "requirements.txt").write_text("fastapi==0.150.0\n")
    assert main(["ensure-venv", "--base-dir", str(tmp_path), "--version", "1", "--python", sys.executable]) == 0
    assert json.loads(capsys.readouterr().out)["python"] == sys.executable
    assert not (tmp_path / "venvs").exists()


def test_every_command_of_the_parser_has_a_function():
    choices = next(a.choices for a in parser()._actions if a.dest == "command")
    assert list(choices) == ["fetch", "unpack", "ensure-venv", "start", "activate", "stop", "status", "labelled"]
    assert set(COMMANDS) == set(choices)


def test_a_failure_is_one_json_object_and_exit_1(tmp_path, capsys):
    out = _main(capsys, "unpack", "--base-dir", str(tmp_path), "--bundle", str(tmp_path / "none.zip"),
                "--version", "1")
    assert out["ok"] is False and "none.zip" in out["error"]


def test_python_m_serving_host_runs_the_agent(tmp_path):
    out = subprocess.run([sys.executable, "-m", "serving.host", "status", "--base-dir", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True, "running": False, "pid": None, "releases": []}
