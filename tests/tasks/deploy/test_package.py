"""The release bundle's contents (a stand-in export: the bundle copies it unchanged)."""

from __future__ import annotations

import re
import zipfile

import pytest

from tasks.constants import CONSTRAINTS, ROOT, SERVING_DIR
from tasks.deploy.package import build_bundle

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
