"""The progress seam: long work (folds, search candidates, transfers, fleet hosts) reports its steps.

A stage function takes a ``Progress`` (or makes one with ``Progress()``) and calls ``step(what, done,
total)`` as each step finishes. ``Progress`` keeps the work's clock and estimates what is left from the
mean step time so far; it hands each ``Step`` to a sink. The sink is the one given, else the one the
caller installed with ``reporting(sink)`` around the work (the flows install one that writes to
Prefect's run log), else nothing: stage functions called directly (tests, notebooks) stay quiet.
Sinks must not raise: progress never breaks the work it describes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

BYTES = "B"


def format_duration(seconds: float) -> str:
    """``0:41``, ``12:05``, ``1:02:03``: minutes and seconds, hours when there are any."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_bytes(count: float) -> str:
    """``512 B``, ``12.4 kB``, ``12.4 MB``, ``1.2 GB`` (powers of 1000, as transfer tools print them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"   # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class Step:
    """One finished step of a piece of work, with its clock."""

    what: str              # "fold 3/5 · candidate 2/6", "transfer ssh host-a", "stage: host 2/4 (host-b)"
    done: int              # steps (or bytes) done so far
    total: int             # steps (or bytes) in all; the work may end early (a search over budget)
    elapsed: float         # seconds since the work began
    left: float | None     # estimated seconds left; None before anything is done
    unit: str = ""         # BYTES: done/total are bytes, shown as sizes

    def line(self) -> str:
        """``fold 3/5 · candidate 2/6 · 0:41 elapsed · ~1:10 left``; bytes: ``transfer ssh a: 1.2 MB/12.4 MB · …``."""
        head = f"{self.what}: {format_bytes(self.done)}/{format_bytes(self.total)}" if self.unit == BYTES \
            else self.what
        parts = [head, f"{format_duration(self.elapsed)} elapsed"]
        if self.left is not None and self.done < self.total:
            parts.append(f"~{format_duration(self.left)} left")
        return " · ".join(parts)


Sink = Callable[[Step], None]


def _ignore(_step: Step) -> None:
    """The default sink: no one is watching."""


_sink: ContextVar[Sink] = ContextVar("progress_sink", default=_ignore)


@contextmanager
def reporting(sink: Sink) -> Iterator[Sink]:
    """Within this block (and the threads Prefect starts from it), ``Progress()`` reports to ``sink``."""
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)


def report_to(sink: Sink) -> None:
    """From now on in this context (a command's main thread, and the threads it starts with a copy of its
    context), ``Progress()`` reports to ``sink`` unless a ``reporting`` block says otherwise."""
    _sink.set(sink)


def estimate_left(elapsed: float, done: int, total: int) -> float | None:
    """Seconds left at the mean time per step so far; None before the first step."""
    if done <= 0:
        return None
    return elapsed / done * max(0, total - done)


class Progress:
    """The clock of one piece of work and where its steps go.

    Args:
        sink: receives every step; None: the one ``reporting`` installed (or none).
        every_s: report a step only this long after the last one reported (the last step always):
            transfers step every block, a run log wants a line a second at most.
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, sink: Sink | None = None, every_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink or _sink.get()
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self._reported: float | None = None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def step(self, what: str, done: int, total: int, unit: str = "") -> None:
        """``done`` of ``total`` steps (or bytes) are finished; the latest is ``what``."""
        now = self.clock()
        if self._reported is not None and done < total and now - self._reported < self.every_s:
            return
        self._reported = now
        elapsed = now - self.started
        self.sink(Step(what, done, total, elapsed, estimate_left(elapsed, done, total), unit))


NO_PROGRESS = Progress(_ignore)
