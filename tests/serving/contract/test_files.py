"""The one atomic write and the one timed file lock (serving/contract/files.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.contract.files import LockBusy, atomic_write, locked, replacing

pytestmark = pytest.mark.unit

WRITES = 300                      # the concurrent reader's loop is bounded by the writer's count
OLD, NEW = b"o" * 200_000, b"n" * 50_000    # two sizes: a half-written file shows as neither


def _parts(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_a_concurrent_reader_sees_the_old_file_or_the_new_one_never_half(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, OLD)
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(WRITES):
                atomic_write(path, NEW if i % 2 else OLD, durable=False)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads, torn = 0, 0
    while not done.is_set():
        data = path.read_bytes()
        reads += 1
        torn += data not in (OLD, NEW)
    thread.join(timeout=30)
    assert torn == 0 and reads > 0
    assert _parts(tmp_path) == []


def test_a_block_that_fails_leaves_the_old_file_and_no_part_file(tmp_path):
    path = tmp_path / "token"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError, match="copy broke"):
        with replacing(path) as fh:
            fh.write(b"new, half")
            raise RuntimeError("copy broke")
    assert path.read_text() == "old"
    assert _parts(tmp_path) == []


def test_text_is_written_as_utf8_and_the_folder_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "note.txt"
    atomic_write(path, "Δp ≤ 1e-6", durable=True)
    assert path.read_bytes() == "Δp ≤ 1e-6".encode()


def test_the_mode_is_set_before_any_byte_is_written(tmp_path):
    path = tmp_path / "secret"
    before = os.umask(0o077)        # the umask would leave 0o600; the mode asked for is set whatever it is
    try:
        with replacing(path, mode=0o604) as fh:
            (part,) = [tmp_path / name for name in _parts(tmp_path)]
            assert stat.S_IMODE(part.stat().st_mode) == 0o604 and part.stat().st_size == 0
            fh.write(b"s3cret")
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o604 and path.read_bytes() == b"s3cret"


@pytest.fixture
def held(tmp_path):
    """A lock held by another open file (flock conflicts between descriptions, in one process too) until set."""
    path = tmp_path / "state.lock"
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locked(path):
            taken.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert taken.wait(timeout=10)
    yield path, release
    release.set()
    thread.join(timeout=10)


def test_a_held_lock_is_waited_for_and_on_wait_is_called_once(held):
    path, release = held
    calls: list[int] = []
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with locked(path, timeout_s=10, on_wait=calls.append) as fd:
        waited = time.monotonic() - started
        assert fd >= 0
    assert 0.25 <= waited < 10
    assert len(calls) == 1


def test_a_lock_held_past_the_bound_raises_lock_busy(held):
    path, _release = held
    calls: list[int] = []
    started = time.monotonic()
    with pytest.raises(LockBusy, match="stayed locked for more than 0.2 s"):
        with locked(path, timeout_s=0.2, on_wait=calls.append):
            pass
    assert 0.2 <= time.monotonic() - started < 5
    assert len(calls) == 1


def test_a_free_lock_is_taken_at_once_without_calling_on_wait(tmp_path):
    calls: list[int] = []
    with locked(tmp_path / "free.lock", timeout_s=0, on_wait=calls.append):
        pass
    assert calls == []


HOLD = """
import sys, time
from pathlib import Path
from serving.contract.files import locked
with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_lock_goes_with_a_holder_that_is_killed(tmp_path):
    path = tmp_path / "state.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy):
            with locked(path, timeout_s=0.1):
                pass
        holder.kill()
        holder.wait(timeout=10)
        with locked(path, timeout_s=5):        # the kernel dropped it with its holder
            pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
