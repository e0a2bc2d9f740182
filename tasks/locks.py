"""Locks per model under the pipeline home: what two runs sharing it must not do at once.

    <home>/locks/<model>.release.lock   read the latest release, reserve the next registry version
                                        (milliseconds: the release number and the version go together)
    <home>/locks/<model>.serving.lock   deploy, promote, rollback: the aliases and the hosts serving them

An ``fcntl`` lock: the kernel drops it when its holder exits, however it exits, so a crashed run
never leaves one behind. (``held_file`` also guards the creation of a SQLite MLflow store, which two
processes must not migrate at once.) The file says who holds it (host, pid, purpose, since), for the message of
whoever waits. Runs on other machines (a team setup) meet in the Prefect global concurrency limit
of the same name instead (``flows/locks.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from serving.contract.files import LockBusy, locked
from tasks.errors import LockTimeout

POLL_S = 0.2   # a waiter for minutes (a deploy) need not look fifty times a second


def lock_path(home: Path, model: str, what: str) -> Path:
    return home / "locks" / f"{model}.{what}.lock"


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it into the lock file (host, pid, purpose, since)."""
    try:
        info = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return "another run"
    if not info:
        return "another run"
    return (f"{info.get('purpose', 'another run')} (pid {info.get('pid')} on {info.get('host')}, "
            f"since {info.get('since')})")


def held(home: Path, model: str, what: str, purpose: str, timeout_s: float,
         on_wait: Callable[[str], None] | None = None):
    """Hold ``<home>/locks/<model>.<what>.lock`` for the block; wait for it up to ``timeout_s``.

    Args:
        purpose: what this run does, shown to whoever waits for the lock.
        on_wait: called once, with who holds the lock, when this run has to wait.

    Raises:
        LockTimeout: another run held it for longer than ``timeout_s`` (names that run).
    """
    return held_file(lock_path(home, model, what), purpose, timeout_s, on_wait, subject=model)


@contextlib.contextmanager
def held_file(path: Path, purpose: str, timeout_s: float, on_wait: Callable[[str], None] | None = None,
              subject: str = "") -> Iterator[None]:
    """Hold the lock file ``path`` for the block (``held``, for any path); ``subject`` begins the messages."""
    me = f"{subject}: {purpose}" if subject else purpose

    def tell(_fd: int) -> None:
        if on_wait is not None:
            on_wait(f"{me} waits for {_holder(path)} ({path})")

    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(locked(path, timeout_s, tell, poll_s=POLL_S))
        except LockBusy:
            raise LockTimeout(f"{me} waited {timeout_s:g} s for {path}, held by {_holder(path)}; "
                              "try again when that run has finished") from None
        record = {"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
