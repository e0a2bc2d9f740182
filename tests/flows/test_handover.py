"""deployments/HANDOVER.md: its curl commands run, as written, against a live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.flows.test_guide_commands import documented_commands

pytestmark = pytest.mark.integration

GUIDE = ROOT / "deployments" / "HANDOVER.md"


def curl_commands() -> list[str]:
    """The guide's curl commands, continuations joined (the one reader of the docs' commands)."""
    return [cmd for doc, cmd in documented_commands() if doc == "deployments/HANDOVER.md" and cmd.startswith("curl ")]


@pytest.fixture
def deployed(served_models, home, tmp_path):
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.package import package_version
    from tasks.deploy.targets import Target
    from tasks.deploy.transports import transport_for
    from testkit.net import free_port

    bundle, meta = package_version(served_models["model_dir"] / "1", tmp_path / "bundles")
    # Laid out as `make run` lays out the local target, under a directory standing for the checkout.
    target = Target(name="local", base_dir=tmp_path / "checkout" / "artifacts" / "targets" / "local", port=free_port())
    deploy_to(target, bundle, meta)
    yield target
    transport_for(target).host("stop")


def setup_lines(text: str) -> list[str]:
    """The guide's `export …` lines that set SERVING_URL, ADMIN_TOKEN and MODEL_DIR."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if "export SERVING_URL" in b)
    return [line for line in block.splitlines() if line.startswith("export ")]


def test_every_curl_command_in_the_guide_runs(deployed):
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed")
    text = GUIDE.read_text()
    commands = curl_commands()
    assert {"/load", "/health", "/model_info", "/predict", "/metrics", "/default", "/feedback",
            "/monitoring/window", "/monitoring/summary"} <= {p for c in commands for p in re.findall(
                r"/(?:load|health|model_info|predict|metrics|default|feedback|monitoring/window|monitoring/summary)",
                c)}
    # The guide's own setup lines, run from the checkout; only the port (8000 may be taken here) and the
    # model's name (the tests train "test-model") differ from what `make run` gives.
    setup = [line.replace("127.0.0.1:8000", f"127.0.0.1:{deployed.port}").replace("/credit-risk", "/test-model")
             for line in setup_lines(text)]
    assert [line.split("=")[0] for line in setup] == ["export SERVING_URL", "export ADMIN_TOKEN", "export MODEL_DIR"]
    checkout = deployed.base_dir.parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("SERVING_URL", "ADMIN_TOKEN", "MODEL_DIR", "PWD")}
    for command in commands:
        script = "set -e\n" + "\n".join(setup) + "\n" + command
        out = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, (command, out.stdout[-500:], out.stderr[-500:])
        if "-w" in command:
            assert out.stdout.strip() == "422", command
