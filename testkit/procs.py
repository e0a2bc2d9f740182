"""Processes started together, for tests of what happens when several open the same thing at once."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable


def run_together(target: Callable, n: int, *args, timeout: float) -> tuple[list[int | None], list]:
    """Run ``target(*args, barrier, results)`` in ``n`` spawned processes that the barrier releases at once;
    join each within ``timeout`` s. Returns their exit codes and everything they put on ``results``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    items = []
    while True:
        try:
            items.append(results.get(timeout=0.2))
        except queue.Empty:
            return [p.exitcode for p in procs], items
