"""The release bundle's contents (a stand-in export: the bundle copies it unchanged), and the host agent's zipapp."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import pytest

from tasks.constants import CONSTRAINTS, HOST_AGENT, ROOT, SERVING_DIR
from tasks.deploy.package import build_bundle, build_host_agent, host_agent_zip

pytestmark = pytest.mark.unit


def _build(tmp_path, out: str):
    export = tmp_path / "export"
    (export / "saved_model").mkdir(parents=True, exist_ok=True)
    (export / "saved_model" / "saved_model.pb").write_bytes(b"model")
    (export / "metadata.json").write_text("{}")
    return build_bundle(export, "m", "1", "1.0.0", ROOT / "configs" / "schema.yaml",
                        ROOT / "configs" / "feature_list.csv", tmp_path / out)


def test_the_bundle_carries_the_pins_the_host_installs_with(tmp_path):
    a, b = _build(tmp_path, "a"), _build(tmp_path, "b")
    assert a.path.read_bytes() == b.path.read_bytes()
    with zipfile.ZipFile(a.path) as zf:
        assert zf.read("constraints.txt") == CONSTRAINTS.read_bytes()
        assert zf.read("requirements.txt") == (SERVING_DIR / "requirements.txt").read_bytes()
        manifest = zf.read("MANIFEST").decode()
    assert f"{a.files['constraints.txt']}  constraints.txt" in manifest.splitlines()


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_the_servers_requirements_agree_with_the_constraints():
    """pip refuses a requirement its constraints contradict: every serving pin is the project's pin."""
    requirements = _pins((SERVING_DIR / "requirements.txt").read_text())
    constraints = _pins(CONSTRAINTS.read_text())
    assert {n: v for n, v in requirements.items() if constraints.get(n) != v} == {}


def test_the_host_agent_ships_as_a_deterministic_zipapp_of_the_agent_alone(tmp_path):
    """Same sources, same bytes; the zipapp holds the agent and the two contract modules it imports, and a file
    that already has its content is not rewritten."""
    a, b = build_host_agent(tmp_path / "a" / HOST_AGENT), build_host_agent(tmp_path / "b" / HOST_AGENT)
    assert a.read_bytes() == b.read_bytes() == host_agent_zip()
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    agent = sorted(f"serving/host/{p.name}" for p in (SERVING_DIR / "host").glob("*.py"))
    assert names == ["__main__.py", "serving/__init__.py", "serving/contract/__init__.py",
                     "serving/contract/constants.py", "serving/contract/digest.py", "serving/contract/files.py",
                     *agent]
    before = a.stat()
    assert build_host_agent(a) == a and (a.stat().st_ino, a.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    a.write_bytes(b"an older agent")
    assert build_host_agent(a).read_bytes() == b.read_bytes()


def test_the_host_agent_runs_with_the_standard_library_alone(tmp_path):
    """``python -I -S``: no site-packages, no PYTHONPATH, not the working directory — what a bare host has."""
    agent = build_host_agent(tmp_path / "bin" / HOST_AGENT)
    out = subprocess.run([sys.executable, "-I", "-S", str(agent), "status", "--base-dir", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True, "running": False, "pid": None, "releases": []}
    bad = subprocess.run([sys.executable, "-I", "-S", str(agent), "unpack", "--base-dir", str(tmp_path),
                          "--bundle", str(tmp_path / "missing.zip"), "--version", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stdout)["ok"] is False
