"""deployments/HANDOVER.md: its curl commands run, as written, against a live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

GUIDE = ROOT / "deployments" / "HANDOVER.md"


def curl_commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)          # shell line continuations
        joined = re.sub(r"'([^']*)'", lambda m: "'" + m.group(1).replace("\n", " ") + "'", joined, flags=re.S)
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return commands


@pytest.fixture
def deployed(served_models, home, tmp_path):
    from tasks.deploy import deploy_to, package_version
    from tasks.targets import Target, transport_for
    from tests.net import free_port

    bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
    target = Target(name="guide", base_dir=home / "targets" / "guide", port=free_port())
    deploy_to(target, bundle, meta)
    yield target
    transport_for(target).host("stop")


def test_every_curl_command_in_the_guide_runs(deployed):
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed")
    commands = curl_commands(GUIDE.read_text())
    assert {"/load", "/health", "/model_info", "/predict", "/metrics", "/default"} <= \
        {p for c in commands for p in re.findall(r"/(?:load|health|model_info|predict|metrics|default)", c)}
    base = deployed.base_dir
    env = {**os.environ, "SERVING_URL": f"http://127.0.0.1:{deployed.port}",
           "ADMIN_TOKEN": (base / "run" / "admin_token").read_text().strip(),
           "MODEL_DIR": str(base / "releases" / "1" / "model" / "test-model")}
    for command in commands:
        out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (command, out.stdout[-500:], out.stderr[-500:])
        if "-w" in command:
            assert out.stdout.strip() == "422", command
