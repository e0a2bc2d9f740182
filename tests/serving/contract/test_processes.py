"""The one process reader (serving/contract/processes.py): a pid names a process only with its start time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from serving.contract.processes import alive, available_cpus, children, rss_bytes, started_at

pytestmark = pytest.mark.unit


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_this_process_is_alive_with_its_own_start_time():
    me = os.getpid()
    assert alive(me) and alive(me, started_at(me))
    assert started_at(me) == f"{psutil.Process(me).create_time():.2f}"


def test_a_pid_with_another_start_time_is_another_process():
    assert not alive(os.getpid(), "1.00")          # the pid reused by a later process: not the one recorded


def test_a_zombie_is_not_alive_and_neither_is_a_reaped_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        _wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 30, "the child to exit")
        assert not alive(child.pid)
        assert not alive(child.pid, started_at(child.pid))
    finally:
        child.wait(timeout=10)
    assert not alive(child.pid) and started_at(child.pid) is None


def test_children_and_their_memory():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children(os.getpid())
        assert rss_bytes([child.pid]) > 0
        assert rss_bytes([2**22 + 7]) == 0                       # a pid with no process is left out
    finally:
        child.kill()
        child.wait(timeout=10)
    assert children(2**22 + 7) == [] and available_cpus() >= 1
