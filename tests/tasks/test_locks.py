"""The per-model locks under the pipeline home: one holder at a time, the waiter told who holds it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from tasks.errors import LockTimeout
from tasks.locks import held, lock_path
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_a_second_holder_waits_and_gives_up_naming_the_first(tmp_path):
    with held(tmp_path, "m", "serving", "deploy of version 3", timeout_s=0):
        with pytest.raises(LockTimeout) as failure:
            with held(tmp_path, "m", "serving", "rollback on t1", timeout_s=0):
                pytest.fail("two holders at once")
    text = str(failure.value)
    assert "m: rollback on t1 waited 0 s" in text and f"deploy of version 3 (pid {os.getpid()}" in text
    with held(tmp_path, "m", "serving", "rollback on t1", timeout_s=0):    # released with the block
        pass
    with held(tmp_path, "m", "release", "reserving", timeout_s=0), held(tmp_path, "other", "serving", "x", 0):
        pass                                                               # per model and per purpose


def test_a_waiter_gets_the_lock_when_the_holder_lets_go(tmp_path):
    inside, order = threading.Event(), []
    release = threading.Event()

    def first():
        with held(tmp_path, "m", "release", "first", timeout_s=0):
            order.append("first in")
            inside.set()
            release.wait(timeout=30)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(timeout=30)
    told = []

    def let_go(message):
        told.append(message)
        release.set()

    with held(tmp_path, "m", "release", "second", timeout_s=30, on_wait=let_go):
        order.append("second in")
    thread.join(timeout=30)
    assert order == ["first in", "first out", "second in"]
    assert len(told) == 1 and "waits for first (pid" in told[0]


def test_a_holder_that_dies_leaves_no_lock_behind(tmp_path):
    code = ("import os, sys\nfrom pathlib import Path\nfrom tasks.locks import held\n"
            f"with held(Path({str(tmp_path)!r}), 'm', 'serving', 'crashing deploy', 0):\n"
            "    print('held', flush=True)\n    os._exit(1)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "held" and lock_path(tmp_path, "m", "serving").exists()
    with held(tmp_path, "m", "serving", "next deploy", timeout_s=0):
        pass
