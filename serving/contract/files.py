"""Files that several processes share: one atomic write and one timed file lock (standard library only).

Both sides use them, and so does the host agent (which ships with only the standard library): the
server's desired state, worker records, monitoring windows and host events; the pipeline's bundles, locks,
alarm state and nginx configuration; the host's token, server record and environments.

    atomic_write(path, data)        a reader sees the old file or the new one, never half of one
    replacing(path)                 the same, for a file written in pieces (a copy, a download)
    locked(path, timeout_s)         an exclusive ``flock``, waited for up to a bound (or for ever)

``durable=True`` (the default) flushes the data to disk before the rename, and the directory after it, so a
power cut leaves the old file or the new one too; ``durable=False`` is for a file rewritten so often that
losing its last version on a crash costs nothing while a fsync each time costs milliseconds (none today).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

LOCK_POLL_S = 0.02


class LockBusy(TimeoutError):
    """The lock stayed held by another process for longer than the caller would wait."""


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, durable: bool = True, mode: int | None = None) -> Iterator[BinaryIO]:
    """Write ``path`` through a private ``.part`` file that replaces it only when the block ends without error.

    The part file is named after this process and a random token (two writers, processes or threads, never
    share one) and removed on error.
    ``mode`` sets the file's permission bits before any byte is written (a secret is never readable).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(part, flags, 0o644 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)   # the umask may have narrowed os.open's mode
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    if durable:
        _sync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, durable: bool = True, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (``replacing`` for one piece; text is written as UTF-8)."""
    with replacing(path, durable, mode) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def locked(path: Path, timeout_s: float | None = None, on_wait: Callable[[int], None] | None = None,
           poll_s: float = LOCK_POLL_S) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; yields its descriptor.

    The kernel drops the lock when its holder exits, however it exits, so a crash never leaves one behind.

    Args:
        timeout_s: how long to wait for another holder; None waits for as long as it takes.
        on_wait: called once with the descriptor when the lock is taken by someone else (to say who).

    Raises:
        LockBusy: still held by another process after ``timeout_s``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout_s is None and on_wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            _wait_for(fd, path, timeout_s, on_wait, poll_s)
        yield fd
    finally:
        os.close(fd)   # drops the lock


def _wait_for(fd: int, path: Path, timeout_s: float | None, on_wait: Callable[[int], None] | None,
              poll_s: float) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                raise LockBusy(f"{path} stayed locked for more than {timeout_s:g} s") from None
            if not told and on_wait is not None:
                on_wait(fd)
                told = True
            time.sleep(poll_s)
