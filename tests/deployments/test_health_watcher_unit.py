"""The health watcher's systemd unit: it runs ``python -m flows watch`` as the CLI parses it, restarts always,
as a user that is not root, and systemd-analyze accepts it as installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

UNIT = ROOT / "deployments" / "systemd" / "ml-pipeline-health-watcher.service"


def _directives(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_the_unit_runs_the_watcher_and_restarts_always():
    from flows.cli import parser

    d = _directives(UNIT.read_text())
    assert d["Restart"] == "always" and d["User"] not in ("root", "0") and d["KillSignal"] == "SIGTERM"
    program, *args = d["ExecStart"].split()
    assert program.endswith("/.venv/bin/python") and args[:2] == ["-m", "flows"]
    assert parser().parse_args(args[2:]).command == "watch"
    assert d["Environment"] == "PYTHONUNBUFFERED=1"          # the last of them: each line reaches the journal
    assert "PIPELINE_HOME=/srv/pipeline" in UNIT.read_text() and d["ReadWritePaths"] == "/srv/pipeline"


@pytest.mark.integration
def test_systemd_analyze_verifies_the_unit_as_installed(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing; `make test` installs systemd")
    checkout, home = tmp_path / "opt" / "tabular-pipeline", tmp_path / "srv" / "pipeline"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(Path(os.path.realpath(sys.executable)))
    home.mkdir(parents=True)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/tabular-pipeline", str(checkout))
                    .replace("/srv/pipeline", str(home)))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                         timeout=60)
    problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                if "ml-pipeline-health-watcher" in ln and "Cannot add dependency job" not in ln]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr
