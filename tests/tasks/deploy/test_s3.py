"""The s3 transport against moto's S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import sys

import boto3
import pytest

from tasks.deploy.targets import Target
from tasks.deploy.transports import transport_for
from tasks.errors import TransferError
from testkit.net import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def target(s3_endpoint, tmp_path):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=f"b-{tmp_path.name[-20:].lower()}")
    return Target(name="cloud", transport="s3", base_dir=tmp_path / "host", port=free_port(),
                  python=sys.executable, bucket=f"b-{tmp_path.name[-20:].lower()}", prefix="models/credit",
                  endpoint_url=s3_endpoint, start_timeout_s=120)


@pytest.fixture(scope="module")
def bundle(served_models, tmp_path_factory):
    from tasks.deploy.package import package_version

    return package_version(served_models["model_dir"] / "1", tmp_path_factory.mktemp("bundles"))


def test_deploy_through_s3(target, bundle, s3_endpoint, monkeypatch):
    """…and the presigned URL (a credential) never appears on a host command line, where ps shows it."""
    from tasks.deploy.deploy import deploy_to
    from tasks.deploy.transports import local

    commands = []
    run = local.subprocess.run

    def recording(cmd, *args, **kwargs):
        commands.append(cmd)
        return run(cmd, *args, **kwargs)

    monkeypatch.setattr(local.subprocess, "run", recording)
    b, meta = bundle
    try:
        deployment = deploy_to(target, b, meta)
        assert deployment.smoke.passed and deployment.action == "start"
        assert "fetch" in [c[2] for c in commands]
        assert not [a for c in commands for a in c if "http" in a or "Signature" in a or "Credential" in a]
        head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=target.bucket,
                                                                         Key=f"models/credit/{b.path.name}")
        assert head["Metadata"]["sha256"] == b.sha256 and head["ContentLength"] == b.path.stat().st_size
        assert (target.base_dir / "incoming" / b.path.name).read_bytes() == b.path.read_bytes()
    finally:
        transport_for(target).host("stop")


@pytest.mark.faults
def test_a_tampered_object_is_refused_by_the_host(target, bundle, s3_endpoint, monkeypatch):
    b, _ = bundle
    transport = transport_for(target)
    key = transport.upload(b)
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=target.bucket, Key=key, Body=b"not a bundle")
    monkeypatch.setattr(transport, "upload", lambda _bundle: key)     # the object changed after upload
    with pytest.raises(TransferError, match="target cloud: fetch: checksum mismatch"):
        transport.put(b)
    assert not (target.base_dir / "incoming" / b.path.name).exists()


def test_missing_bucket_names_the_target(target, bundle):
    bad = target.model_copy(update={"bucket": "no-such-bucket"})
    with pytest.raises(TransferError, match=r"target cloud \(s3://no-such-bucket/models/credit\): upload"):
        transport_for(bad).put(bundle[0])


def test_a_fleet_uploads_the_bundle_once_and_every_host_fetches_it(target, bundle, monkeypatch):
    """Three s3 targets on one bucket and prefix: one upload, three fetches, each host's copy checked."""
    from tasks.deploy.deploy import stage_on, upload_once
    from tasks.deploy.transports import S3Transport

    b, meta = bundle
    hosts = [target.model_copy(update={"name": f"cloud-{i}", "base_dir": target.base_dir.parent / f"host-{i}"})
             for i in range(3)]
    uploads = []
    real = S3Transport.upload
    monkeypatch.setattr(S3Transport, "upload", lambda self, bundle: uploads.append(self.target.name)
                        or real(self, bundle))
    keys = upload_once(hosts, b)
    assert uploads == ["cloud-0"] and set(keys) == {"cloud-0", "cloud-1", "cloud-2"}
    assert set(keys.values()) == {f"models/credit/{b.path.name}"}
    receipts = [stage_on(h, b, meta, keys[h.name]) for h in hosts]
    assert uploads == ["cloud-0"]                                     # fetching uploads nothing again
    for host, receipt in zip(hosts, receipts, strict=True):
        assert receipt.sha256 == b.sha256 and (host.base_dir / "incoming" / b.path.name).read_bytes() == \
            b.path.read_bytes()
        assert (host.base_dir / "releases" / meta.version / "MANIFEST").exists()
