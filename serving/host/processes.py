"""The few process facts the host agent needs, read from /proc (standard library only: psutil is not on a
bare host): liveness, start time, the command line, process groups and their termination.

Fields of /proc/<pid>/stat are counted as in proc(5); the command name (field 2) may hold spaces and
parentheses, so the fields are split after its closing parenthesis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

POLL_S = 0.1


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on — index 0 is field 3 — or None without such a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def _have_proc() -> bool:
    return Path("/proc/self/stat").exists()


def started_at(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (field 22): with the pid, it names one process."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) does not."""
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] != "Z"
    if _have_proc():
        return False
    try:   # no /proc: the signal test is all there is
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def command_line(pid: int) -> list[str]:
    """The arguments ``pid`` was started with (empty when it is gone or unreadable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies aside)."""
    if not _have_proc():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def _kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def terminate_group(pgid: int, timeout: float) -> None:
    """SIGTERM a process group, then SIGKILL whatever of it is left after ``timeout``."""
    if not _kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if group_alive(pgid):
        _kill_group(pgid, signal.SIGKILL)


def run_bounded(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; past ``timeout`` the whole group (pip's builds too) is killed.

    Raises:
        subprocess.CalledProcessError: it failed.
        subprocess.TimeoutExpired: it ran past ``timeout``.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
