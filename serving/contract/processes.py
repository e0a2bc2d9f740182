"""Processes and CPUs, through psutil: the one liveness, identity and memory reader of the pipeline and the
server (the host agent, standard library only, keeps its own few lines of /proc).

A pid alone does not name a process for long (the kernel reuses them): ``identity`` pairs it with the
process's start time, so a record written by one process is never taken for a later one with its pid.
"""

from __future__ import annotations

import os

import psutil


def available_cpus() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def started_at(pid: int) -> str | None:
    """The process's start time (seconds since the epoch, as text), or None without such a process."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not); with ``started``, whether it is
    still the process that started then."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or f"{proc.create_time():.2f}" == started
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return started is None


def children(pid: int, recursive: bool = False) -> list[int]:
    """The pids of a process's children (all descendants with ``recursive``), sorted; [] without it."""
    try:
        return sorted(c.pid for c in psutil.Process(pid).children(recursive=recursive))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far (0.0 without such a process)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return times.user + times.system


def rss_bytes(pids: list[int]) -> int:
    """The resident memory of these processes together (those gone since are left out)."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total
