"""Where the training data comes from: a CSV or Parquet file, on disk or at an ``s3://bucket/key`` URI.

``read_table`` returns the file as an Arrow table (a CSV with every cell as text, so type problems
can be quoted verbatim; a Parquet file with its own column types) together with the SHA-256 of the
file's bytes and the path or URI as given, which the lineage records.

An S3 object is streamed to a temporary file (1 MiB at a time, hashed on the way) and read from
there; the file is deleted once read. boto3 finds the credentials and the endpoint the usual
way (``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` for an
S3-compatible store, ``AWS_DEFAULT_REGION``); no message names a credential.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serving.contract.digest import CHUNK, sha256_copy, sha256_file
from serving.contract.errors import Problem
from tasks.errors import DataValidationError

log = logging.getLogger(__name__)
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MAGIC = b"PAR1"
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60


@dataclass(frozen=True)
class RawTable:
    """A data file as read: ``table`` (pyarrow.Table) holds text columns for a CSV, typed ones for Parquet."""

    source: str
    sha256: str
    format: str        # "csv" or "parquet"
    table: object      # pyarrow.Table


def is_s3(data: str | Path) -> bool:
    return str(data).startswith("s3://")


def data_name(data: str | Path) -> str:
    """The file name of a path or URI: ``s3://b/x/loans.parquet`` → ``loans.parquet``."""
    return str(data).rstrip("/").rpartition("/")[2] if is_s3(data) else Path(data).name


def _fail(source: str, issue: str, detail: str) -> DataValidationError:
    return DataValidationError([Problem(None, issue, detail)], source)


def read_table(data: str | Path) -> RawTable:
    """Read the data a ``--data`` argument names.

    Raises:
        DataValidationError: the file or object is missing or unreadable (names the path or URI).
    """
    source = str(data)
    if is_s3(source):
        with tempfile.TemporaryDirectory(prefix="pipeline-data-") as tmp:
            local = Path(tmp) / (data_name(source) or "data")
            digest = download_s3(source, local)
            return _read_local(local, source, digest)
    path = Path(source)
    if not path.exists():
        raise _fail(source, "file not found", source)
    if path.is_dir():
        raise _fail(source, "not a file", f"{path} is a directory; name a CSV or Parquet file")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise _fail(source, "unreadable file", exc.strerror or str(exc)) from None
    return _read_local(path, source, digest)


def _read_local(path: Path, source: str, digest: str) -> RawTable:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise _fail(source, "unreadable file", exc.strerror or str(exc)) from None
    if path.suffix.lower() in PARQUET_SUFFIXES or magic == PARQUET_MAGIC:
        return RawTable(source, digest, "parquet", _read_parquet(path, source))
    return RawTable(source, digest, "csv", _read_csv(path, source))


def _read_parquet(path: Path, source: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(source, "unreadable Parquet", str(exc).strip()) from None


def _header(path: Path, source: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _fail(source, "unreadable CSV", f"header: {exc}") from None


def _read_csv(path: Path, source: str):
    """Every cell as text ("" where empty), like ``pandas.read_csv(dtype=str, keep_default_na=False)``,
    in C++ on every core. Rows with the wrong number of fields are reported, every one of them."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    header = _header(path, source)
    if not header:
        raise _fail(source, "unreadable CSV", "no header row (the file is empty)")
    bad_rows: list[tuple[int | None, int]] = []

    def invalid(row) -> str:
        bad_rows.append((row.number, row.actual_columns))
        return "skip"

    def read(threads: bool):
        return pcsv.read_csv(
            path, read_options=pcsv.ReadOptions(use_threads=threads),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
            convert_options=pcsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False))

    try:
        table = read(threads=True)
        if any(number is None for number, _ in bad_rows):   # line numbers are known only to a serial read
            bad_rows.clear()
            table = read(threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(source, "unreadable CSV", str(exc).strip()) from None
    table = table.rename_columns([name.lstrip() for name in table.column_names])
    if bad_rows:
        # The reader's numbers are lines of the file, the header being line 1. The rows after a ragged one
        # would be numbered wrongly, so this is the one problem reported.
        rows = tuple(sorted(n - 1 for n, _ in bad_rows if n is not None))
        raise DataValidationError([Problem(None, "wrong number of fields", f"the header has {len(header)} fields",
                                           count=len(bad_rows), rows=rows[:10],
                                           examples=tuple(dict.fromkeys(f"{k} fields" for _, k in bad_rows))[:5])],
                                  source)
    return table


# ---------------------------------------------------------------- S3

def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def download_s3(uri: str, dest: Path) -> str:
    """Stream ``s3://bucket/key`` to ``dest``; returns the SHA-256 of its bytes.

    Raises:
        DataValidationError: a malformed URI, no such bucket or key, no credentials, access denied,
            an unreachable endpoint or too little disk space (names the URI, never a credential).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    bucket, key = _split(uri)
    if not bucket or not key or key.endswith("/"):
        raise _fail(uri, "not a file", "an S3 URI names one object: s3://bucket/key")
    # A session of its own: boto3's default one keeps the credentials it resolved first.
    config = Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
                    retries={"max_attempts": 3, "mode": "standard"})
    client = boto3.session.Session().client("s3", config=config)
    endpoint = client.meta.endpoint_url
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        size = int(obj.get("ContentLength") or 0)
        free = shutil.disk_usage(dest.parent).free
        if size > free:
            obj["Body"].close()
            raise _fail(uri, "too large", f"{size} bytes, {free} free in {dest.parent} (set TMPDIR elsewhere)")
        with open(dest, "wb") as fh:
            sha256 = sha256_copy(obj["Body"].iter_chunks(CHUNK), fh)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            raise _fail(uri, "file not found", f"no bucket '{bucket}' at {endpoint}") from None
        if code in ("NoSuchKey", "404") or status == 404:
            raise _fail(uri, "file not found", f"no object '{key}' in bucket '{bucket}'") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            raise _fail(uri, "access denied", f"{code or status}: the credentials may not read this object") from None
        raise _fail(uri, "unreadable object", f"{code or status} from {endpoint}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise _fail(uri, "no credentials", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE") from None
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise _fail(uri, "endpoint unreachable", f"{endpoint}: {type(exc).__name__} (AWS_ENDPOINT_URL sets "
                                                  "the endpoint of an S3-compatible store)") from None
    except BotoCoreError as exc:
        raise _fail(uri, "unreadable object", f"{type(exc).__name__} from {endpoint}") from None
    except OSError as exc:
        raise _fail(uri, "unreadable object", f"writing {dest}: {exc.strerror or exc}") from None
    log.info("%s: %d bytes from %s", uri, dest.stat().st_size, endpoint)
    return sha256
