"""Processes for the tests and benchmarks: started together (tests of what happens when several open the same
thing at once), and the CPU the whole machine spent meanwhile (benchmarks on a shared machine)."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable

import psutil


def run_together(target: Callable, n: int, *args, timeout: float) -> tuple[list[int | None], list]:
    """Run ``target(*args, barrier, results)`` in ``n`` processes that the barrier releases at once; join each
    within ``timeout`` s. Returns their exit codes and everything they put on ``results``.

    The processes are forked from a fork server (a fresh interpreter, so nothing of this process's threads,
    TensorFlow's among them, is copied) that imported ``target``'s module once: a spawned process
    imports it, pytest included, each time (half a second each; 18 of them made a 3 s test).
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([target.__module__])
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    # A process that exited flushed what it put on the queue into the pipe before it did: what is there
    # can be read without waiting. Only one still running after the timeout may put more, later.
    wait = 0.2 if any(p.exitcode is None for p in procs) else 0
    items = []
    while True:
        try:
            items.append(results.get(timeout=wait) if wait else results.get_nowait())
        except queue.Empty:
            return [p.exitcode for p in procs], items


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, all processes together: every CPU state but
    idle and waiting for I/O (guest time is inside user time already)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + sum(getattr(times, f, 0.0) for f in ("irq", "softirq", "steal"))
