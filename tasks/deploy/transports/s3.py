"""The s3 transport (boto3): the bundle goes to a bucket and prefix, the host fetches it.

``put`` is ``upload`` then ``fetch``; a fleet release uploads once and each host only fetches.
Upload is multipart above 8 MiB with an S3 SHA-256 checksum; the object also carries the
bundle's SHA-256 as metadata. The host downloads it through a presigned URL that expires
after 15 minutes (so the host needs no credentials; the URL reaches it on stdin, not on its
command line) and keeps it only if the SHA-256 matches.
``endpoint_url`` makes any S3-compatible store work.
"""

from __future__ import annotations

import logging

from tasks.deploy.package import Bundle
from tasks.deploy.targets import Target
from tasks.deploy.transports.base import BytesSent, TransferReceipt, Transport
from tasks.deploy.transports.local import LocalTransport
from tasks.deploy.transports.ssh import SSHTransport
from tasks.errors import ConfigError, TransferError

log = logging.getLogger(__name__)
PRESIGN_SECONDS = 900
MULTIPART = 8 << 20


class S3Transport:
    def __init__(self, target: Target) -> None:
        if not target.bucket:
            raise ConfigError(f"target {target.name}: the s3 transport needs a bucket")
        self.target = target
        self.where = f"target {target.name} (s3://{target.bucket}/{target.prefix})"
        # Host commands (the fetch included) run over ssh when the target names a user, else here.
        self._host: Transport = SSHTransport(target) if target.user else LocalTransport(target)

    def _client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.target.endpoint_url, region_name=self.target.region,
                            config=Config(connect_timeout=self.target.connect_timeout_s,
                                          read_timeout=self.target.command_timeout_s,
                                          retries={"max_attempts": 3, "mode": "standard"}))

    def key(self, bundle: Bundle) -> str:
        return f"{self.target.prefix.strip('/')}/{bundle.path.name}".lstrip("/")

    def upload(self, bundle: Bundle) -> str:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(bundle)
        try:
            self._client().upload_file(str(bundle.path), self.target.bucket, key, Config=TransferConfig(
                multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART),
                Callback=BytesSent("s3", self.target, bundle.path.stat().st_size),
                ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": bundle.sha256}})
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise TransferError(f"{self.where}: upload: {exc}") from None
        return key

    def put(self, bundle: Bundle) -> TransferReceipt:
        return self.fetch(bundle, self.upload(bundle))

    def fetch(self, bundle: Bundle, key: str) -> TransferReceipt:
        """The host downloads an uploaded bundle (``key``) through a presigned URL; a fleet uploads once and
        every host fetches."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            url = self._client().generate_presigned_url(
                "get_object", Params={"Bucket": self.target.bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS)
        except (BotoCoreError, ClientError) as exc:
            raise TransferError(f"{self.where}: presign: {exc}") from None
        # The URL is a credential for 15 minutes: on stdin, never on the host's command line (ps).
        fetched = self._host.host("fetch", "--sha256", bundle.sha256, "--name", bundle.path.name, stdin=url + "\n")
        log.info("%s: s3://%s/%s fetched by the host to %s", self.where, self.target.bucket, key, fetched["path"])
        return TransferReceipt(self.target.name, fetched["path"], bundle.sha256, fetched["bytes"])

    def host(self, *args: str, stdin: str | None = None) -> dict:
        return self._host.host(*args, stdin=stdin)
