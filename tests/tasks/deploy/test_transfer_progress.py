"""Transfers report the bytes sent (``transfer ssh edge: 1.2 MB/2.4 MB``), whatever the transport."""

from __future__ import annotations

import hashlib
import sys

import pytest

from tasks.deploy.package import Bundle
from tasks.deploy.targets import Target
from tasks.deploy.transports import transport_for
from tasks.deploy.transports.base import BytesSent
from tasks.progress import BYTES, Progress, Step, reporting
from testkit.net import free_port


def _bundle(tmp_path, size: int) -> Bundle:
    path = tmp_path / "m-1.zip"
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    path.write_bytes(data)
    return Bundle(path, hashlib.sha256(data).hexdigest(), "1.0.0", "m", "1", {})


def _bytes(steps: list[Step]) -> list[tuple[str, int, int]]:
    return [(s.what, s.done, s.total) for s in steps if s.unit == BYTES]


@pytest.mark.unit
def test_bytes_sent_add_up_from_where_a_resumed_upload_starts(tmp_path):
    steps: list[Step] = []
    target = Target(name="edge", transport="local", base_dir=tmp_path, port=free_port())
    sent = BytesSent("ssh", target, 3000, start=1000, progress=Progress(steps.append))
    sent(1000)
    sent(1000)
    assert _bytes(steps) == [("transfer ssh edge", 2000, 3000), ("transfer ssh edge", 3000, 3000)]
    assert steps[-1].line().startswith("transfer ssh edge: 3.0 kB/3.0 kB · ")


@pytest.mark.unit
def test_a_local_transfer_reports_its_bytes_to_the_sink_around_it(tmp_path):
    bundle = _bundle(tmp_path, 3 << 20)           # three CHUNKs of 1 MiB
    target = Target(name="t1", transport="local", base_dir=tmp_path / "host", port=free_port())
    steps: list[Step] = []
    with reporting(steps.append):
        receipt = transport_for(target).put(bundle)
    assert receipt.bytes == 3 << 20
    reported = _bytes(steps)
    assert reported[-1] == ("transfer local t1", 3 << 20, 3 << 20)      # the last block always shows
    assert all(what == "transfer local t1" and total == 3 << 20 for what, _done, total in reported)


@pytest.mark.integration
def test_an_ssh_upload_reports_its_bytes(sshd, tmp_path):
    bundle = _bundle(tmp_path, 200_000)
    target = Target.model_validate({
        "name": "edge", "transport": "ssh", "base_dir": tmp_path / "remote", "host": "127.0.0.1",
        "port": free_port(), "python": sys.executable, "user": sshd["user"], "ssh_port": sshd["port"],
        "key_file": sshd["key"], "known_hosts": sshd["known_hosts"], "connect_timeout_s": 10})
    steps: list[Step] = []
    with reporting(steps.append):
        transport_for(target).put(bundle)
    assert _bytes(steps)[-1] == ("transfer ssh edge", 200_000, 200_000)


@pytest.mark.integration
def test_an_s3_upload_reports_its_bytes(s3_endpoint, tmp_path):
    import boto3

    bucket = f"b-{tmp_path.name[-20:].lower()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    target = Target(name="cloud", transport="s3", base_dir=tmp_path / "host", port=free_port(), bucket=bucket,
                    prefix="models", endpoint_url=s3_endpoint)
    bundle = _bundle(tmp_path, 300_000)
    steps: list[Step] = []
    with reporting(steps.append):
        transport_for(target).upload(bundle)
    assert _bytes(steps)[-1] == ("transfer s3 cloud", 300_000, 300_000)
