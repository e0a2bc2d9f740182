"""SHA-256 of files and bytes: the one hashing helper of the pipeline, the model server and the host agent.

Standard library only: the host agent's zipapp carries it (tasks/deploy/package.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks (bundles and SavedModel variables can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_copy(blocks: Iterable[bytes], out: BinaryIO) -> str:
    """Write ``blocks`` to ``out`` and return their hex SHA-256: a download hashed as it arrives, read once."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
        out.write(block)
    return digest.hexdigest()
