"""The ssh transport against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import logging
import sys

import pytest

from tasks.deploy.targets import Target
from tasks.deploy.transports import transport_for
from tasks.errors import TransferError
from testkit.net import free_port

pytestmark = pytest.mark.integration


def _target(sshd, tmp_path, **over) -> Target:
    spec = {"name": "edge", "transport": "ssh", "base_dir": tmp_path / "remote", "host": "127.0.0.1",
            "port": free_port(), "python": sys.executable, "user": sshd["user"], "ssh_port": sshd["port"],
            "key_file": sshd["key"], "known_hosts": sshd["known_hosts"], "connect_timeout_s": 10,
            "start_timeout_s": 120}
    return Target.model_validate({**spec, **over})


@pytest.fixture(scope="module")
def bundle(served_models, tmp_path_factory):
    from tasks.deploy.package import package_version

    return package_version(served_models["model_dir"] / "1", tmp_path_factory.mktemp("bundles"))


def test_deploy_over_ssh_starts_and_smoke_tests(sshd, tmp_path, bundle):
    from tasks.deploy.deploy import deploy_to

    b, meta = bundle
    target = _target(sshd, tmp_path)
    try:
        deployment = deploy_to(target, b, meta)
        assert deployment.action == "start" and deployment.smoke.passed
        assert deployment.smoke.golden_max_abs_diff <= 1e-6
        assert (tmp_path / "remote" / "incoming" / b.path.name).exists()
        assert not (tmp_path / "remote" / "incoming" / (b.path.name + ".part")).exists()
        assert (tmp_path / "remote" / "releases" / "1" / "MANIFEST").exists()
        status = transport_for(target).host("status")
        assert status["running"] and status["default_version"] == "1"
    finally:
        transport_for(target).host("stop")


@pytest.mark.faults
def test_interrupted_upload_resumes(sshd, tmp_path, bundle):
    b, _ = bundle
    transport = transport_for(_target(sshd, tmp_path))
    with pytest.raises(TransferError, match="stopped after"):
        transport.put(b, max_bytes=16 * 1024, chunk=8 * 1024)
    receipt = transport.put(b)
    assert receipt.resumed_from == 16 * 1024 and receipt.sha256 == b.sha256
    from serving.contract.digest import sha256_file

    assert sha256_file(receipt.remote_path) == b.sha256


@pytest.mark.faults
@pytest.mark.faults
def test_a_connection_cut_mid_upload_is_a_clear_error_and_the_next_put_resumes(sshd, tmp_path, bundle, monkeypatch,
                                                                              figure):
    """The server side of the connection is killed mid-upload (what a dropped network or a restarted sshd
    does): the upload fails naming the host and step, and the next one resumes from what had landed."""
    import paramiko

    from testkit.sshd import cut_connections
    from tests.faults.conftest import wait_until

    b, _ = bundle
    written = {"bytes": 0, "cut": 0}
    real_write = paramiko.SFTPFile.write

    def write_then_cut(self, data):
        out = real_write(self, data)
        written["bytes"] += len(data)
        if written["bytes"] >= 32 * 1024 and not written["cut"]:
            self.flush()
            # Part of it has landed on the host's disk before the cut (the host is this machine: look).
            parts = lambda: [p for p in (tmp_path / "remote" / "incoming").glob("*.part")     # noqa: E731
                             if p.stat().st_size >= 8 * 1024]
            wait_until(parts, 30, "8 KiB on the host")
            written["cut"] = cut_connections(sshd["pid"])
        return out

    transport = transport_for(_target(sshd, tmp_path))
    monkeypatch.setattr(paramiko.SFTPFile, "write", write_then_cut)
    with pytest.raises(TransferError, match=r"target edge \(.*\): transfer: "):
        transport.put(b, chunk=8 * 1024)
    monkeypatch.undo()
    assert written["cut"] >= 1
    receipt = transport.put(b)
    from serving.contract.digest import sha256_file

    assert 8 * 1024 <= receipt.resumed_from < b.path.stat().st_size
    assert sha256_file(receipt.remote_path) == b.sha256
    figure("resumed_from_bytes", receipt.resumed_from, "bytes", f"of {b.path.stat().st_size}: what had landed "
           "when the connection was cut")


@pytest.mark.parametrize("over, message", [
    ({"known_hosts_key": "known_hosts_empty"}, "unknown host key"),
    ({"known_hosts_key": "known_hosts_changed"}, "the host key CHANGED"),
    ({"key_key": "other_key"}, "authentication failed"),
])
def test_refusals_name_the_host_and_step(sshd, tmp_path, bundle, over, message):
    b, _ = bundle
    spec = {}
    if "known_hosts_key" in over:
        spec["known_hosts"] = sshd["dir"] / over["known_hosts_key"]
    if "key_key" in over:
        spec["key_file"] = sshd["dir"] / over["key_key"]
    target = _target(sshd, tmp_path, **spec)
    with pytest.raises(TransferError, match=f"target edge \\(.*@127.0.0.1:{sshd['port']}\\): connect: {message}"):
        transport_for(target).put(b)
    assert not (tmp_path / "remote").exists()


def test_unreachable_host(sshd, tmp_path, bundle):
    target = _target(sshd, tmp_path, ssh_port=free_port(), connect_timeout_s=3)
    with pytest.raises(TransferError, match="connect: host unreachable"):
        transport_for(target).put(bundle[0])


def test_auto_add_is_an_explicit_opt_in_that_warns(sshd, tmp_path, bundle, caplog):
    fresh = tmp_path / "kh"
    target = _target(sshd, tmp_path, known_hosts=fresh, auto_add_host_key=True)
    with caplog.at_level(logging.WARNING, logger="tasks.deploy.transports.ssh"):
        transport_for(target).put(bundle[0])
    assert any("trusting the unknown host key" in r.message for r in caplog.records)
    with pytest.raises(TransferError, match="no known_hosts file"):
        transport_for(_target(sshd, tmp_path, known_hosts=tmp_path / "missing")).put(bundle[0])


def _small_bundle(tmp_path):
    from serving.contract.digest import sha256_file
    from tasks.deploy.package import Bundle

    path = tmp_path / "0.0.1.zip"
    path.write_bytes(b"a small upload")
    return Bundle(path=path, sha256=sha256_file(path), release="0.0.1", model_name="m", version="1", files={})


def test_auto_add_saves_the_first_key_and_refuses_a_changed_one(sshd, tmp_path, caplog):
    """Trust on first use means first use only: the key is saved (0600, the file and its directory
    created), and a server on the same host and port with another key is refused, by name."""
    import os
    import stat

    from testkit.sshd import start_sshd

    keys = tmp_path / "sshd"
    keys.mkdir()
    server, info = start_sshd(keys)
    known = tmp_path / "ssh" / "known_hosts"
    target = _target(info, tmp_path, known_hosts=known, auto_add_host_key=True)
    small = _small_bundle(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="tasks.deploy.transports.ssh"):
            transport_for(target).put(small)
        assert any("trusting the unknown host key" in r.message for r in caplog.records)
        assert stat.S_IMODE(os.stat(known).st_mode) == 0o600
        saved = known.read_text()
        assert saved.split() == (keys / "known_hosts").read_text().split()     # [127.0.0.1]:port ssh-ed25519 …
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tasks.deploy.transports.ssh"):
            transport_for(target).put(small)
        assert not caplog.records

        server.terminate()
        server.wait(timeout=10)
        server, _ = start_sshd(keys, port=info["port"], host_key="other_host_key")
        with pytest.raises(TransferError, match=f"target edge \\(.*@127.0.0.1:{info['port']}\\): connect: the host "
                                                f"key CHANGED .* not the key {known} holds"):
            transport_for(target).put(small)
        assert known.read_text() == saved
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_auto_add_without_a_known_hosts_path_is_refused(sshd, tmp_path):
    target = _target(sshd, tmp_path, known_hosts=None, auto_add_host_key=True)
    with pytest.raises(TransferError, match="auto_add_host_key needs a known_hosts path"):
        transport_for(target).put(_small_bundle(tmp_path))


@pytest.fixture
def full_disk(tmp_path):
    """A 32 KiB tmpfs: smaller than any bundle."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.faults
@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_a_full_disk_on_the_host_is_a_clear_error(sshd, tmp_path, bundle, full_disk, transport):
    target = _target(sshd, tmp_path, base_dir=full_disk / "remote", transport=transport)
    with pytest.raises(TransferError, match=r"target edge.*transfer: .*(No space left|disk full)"):
        transport_for(target).put(bundle[0])
    assert not (full_disk / "remote" / "incoming" / bundle[0].path.name).exists()
