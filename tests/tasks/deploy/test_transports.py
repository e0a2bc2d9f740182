"""What the transports ask of a host — command lines, timeouts, stdin — with a stand-in SSH client."""

from __future__ import annotations

import json
import shlex
from types import SimpleNamespace

import pytest

from tasks.deploy.targets import Target
from tasks.deploy.transports import SSHTransport

pytestmark = pytest.mark.unit


class _Stream:
    def __init__(self, data: str = "") -> None:
        self.data, self.written, self.closed = data, "", False
        self.channel = SimpleNamespace(recv_exit_status=lambda: 0)

    def read(self) -> bytes:
        return self.data.encode()

    def write(self, data: str) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


class _Client:
    """paramiko.SSHClient's exec_command, recorded; every command answers ``answer``."""

    def __init__(self, answer: dict) -> None:
        self.answer, self.calls = answer, []

    def exec_command(self, command: str, timeout: float | None = None):
        stdin = _Stream()
        self.calls.append({"argv": shlex.split(command), "timeout": timeout, "stdin": stdin})
        return stdin, _Stream(json.dumps({"ok": True, **self.answer}) + "\n"), _Stream()

    def close(self) -> None:
        pass


@pytest.fixture
def ssh(tmp_path, monkeypatch):
    target = Target(name="edge", transport="ssh", base_dir="/srv/ml", host="10.0.0.5", user="deploy",
                    known_hosts=tmp_path / "known_hosts")
    client = _Client({"python": "/srv/ml/venvs/x/bin/python", "path": "/srv/ml/incoming/1.0.0.zip", "bytes": 3})
    transport = SSHTransport(target)
    monkeypatch.setattr(transport, "_connect", lambda: client)
    transport._agent_installed = True   # the agent's upload is tested against a real sshd (test_ssh.py)
    return target, transport, client


def test_the_venv_step_waits_as_long_as_the_host_may_build(ssh):
    """A first environment build on a fresh host outlasts the usual command timeout: the transport waits
    longer than the host's own build timeout, which is the target's venv_timeout_s."""
    target, transport, client = ssh
    assert target.venv_timeout_s >= 1800 > target.command_timeout_s
    transport.host("ensure-venv", "--version", "1")
    transport.host("start", "--version", "1")
    venv, start = client.calls
    build_timeout = float(venv["argv"][venv["argv"].index("--timeout") + 1])
    assert build_timeout == target.venv_timeout_s
    assert venv["timeout"] > build_timeout
    assert start["timeout"] == target.command_timeout_s
    assert float(start["argv"][start["argv"].index("--timeout") + 1]) == target.start_timeout_s


def test_deploy_builds_the_environment_as_its_own_step_before_start(monkeypatch):
    from tasks.deploy import deploy as deploy_mod
    from tasks.deploy.smoke import SmokeReport
    from tasks.deploy.transports import TransferReceipt

    steps = []

    class Recorder:
        def put(self, bundle):
            return TransferReceipt("t", "/srv/ml/incoming/1.0.0.zip", "0" * 64, 3)

        def host(self, *args, stdin=None):
            steps.append(args)
            return {"action": "start", "previous_version": None}

    monkeypatch.setattr(deploy_mod, "transport_for", lambda target: Recorder())
    monkeypatch.setattr(deploy_mod, "smoke_test", lambda target, url, metadata: SmokeReport(
        target, url, metadata.version, True))
    target = Target(name="t", base_dir="/srv/ml")
    bundle = SimpleNamespace(files={"model/m/1/metadata.json": "a" * 64})
    deploy_mod.deploy_to(target, bundle, SimpleNamespace(version="1", model_name="m"))
    assert [s[0] for s in steps] == ["unpack", "ensure-venv", "start"]
    assert steps[-1][-2:] == ("--metadata-sha256", "a" * 64)     # the server checks what was packaged


def test_the_presigned_url_reaches_the_host_on_stdin_not_its_command_line(ssh):
    from tasks.deploy.transports import S3Transport

    target, _transport, client = ssh
    url = "https://bucket.s3.amazonaws.com/models/1.0.0.zip?X-Amz-Signature=abc123&X-Amz-Credential=AKIA"
    s3 = S3Transport(target.model_copy(update={"transport": "s3", "bucket": "bucket"}))
    s3._host._connect = lambda: client
    s3._host._agent_installed = True
    s3.upload = lambda bundle: "models/1.0.0.zip"
    s3._client = lambda: SimpleNamespace(generate_presigned_url=lambda *a, **k: url)
    s3.put(SimpleNamespace(sha256="0" * 64, path=SimpleNamespace(name="1.0.0.zip")))
    (fetch,) = client.calls
    assert fetch["argv"][2] == "fetch"
    assert not any("Signature" in a or "https:" in a or "AKIA" in a for a in fetch["argv"])
    assert fetch["stdin"].written == url + "\n" and fetch["stdin"].closed


def test_the_targets_workers_reach_the_hosts_start_and_nothing_else(tmp_path):
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports.base import host_command

    inventory = tmp_path / "targets.yaml"
    inventory.write_text("targets:\n  four:\n    base_dir: /srv/ml\n    workers: 4\n  cores:\n    base_dir: /srv/ml\n"
                         "    workers: auto\n  unset:\n    base_dir: /srv/ml\n")
    targets = load_targets(inventory, tmp_path)
    assert targets["four"].workers == 4 and targets["cores"].workers == "auto" and targets["unset"].workers is None
    auto = host_command(targets["cores"], "host.py", "python3", None, "start", "--version", "1")
    assert auto[auto.index("--workers") + 1] == "auto"
    start = host_command(targets["four"], "host.py", "python3", None, "start", "--version", "1")
    assert start[start.index("--workers") + 1] == "4"
    assert "--workers" not in host_command(targets["four"], "host.py", "python3", None, "activate", "--version", "1")
    assert "--workers" not in host_command(targets["unset"], "host.py", "python3", None, "start", "--version", "1")
    inventory.write_text("targets:\n  none:\n    base_dir: /srv/ml\n    workers: 0\n")
    with pytest.raises(Exception, match="targets.none.workers"):
        load_targets(inventory, tmp_path)
