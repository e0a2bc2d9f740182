"""The progress seam: durations and sizes as a person reads them, the estimate of what is left, the sinks."""

from __future__ import annotations

import pytest

from tasks.progress import BYTES, NO_PROGRESS, Progress, Step, estimate_left, format_bytes, format_duration, reporting

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0:00"), (0.4, "0:00"), (41, "0:41"), (70, "1:10"),
                                                (725, "12:05"), (3723, "1:02:03"), (-3, "0:00")])
def test_durations_read_as_minutes_and_seconds(seconds, shown):
    assert format_duration(seconds) == shown


@pytest.mark.parametrize(("count", "shown"), [(0, "0 B"), (999, "999 B"), (12_400, "12.4 kB"),
                                              (12_400_000, "12.4 MB"), (1_250_000_000, "1.2 GB"),
                                              (5_000_000_000_000, "5000.0 GB")])
def test_sizes_read_in_powers_of_1000(count, shown):
    assert format_bytes(count) == shown


def test_what_is_left_is_the_mean_step_time_times_the_steps_to_go():
    assert estimate_left(elapsed=41, done=7, total=30) == pytest.approx(41 / 7 * 23)
    assert estimate_left(elapsed=41, done=0, total=30) is None
    assert estimate_left(elapsed=41, done=30, total=30) == 0
    assert estimate_left(elapsed=41, done=31, total=30) == 0     # a total that shrank under the count


def test_a_step_reads_as_one_line():
    assert Step("fold 3/5 · candidate 2/6", 8, 30, 41, 70).line() == \
        "fold 3/5 · candidate 2/6 · 0:41 elapsed · ~1:10 left"
    assert Step("fold 5/5", 5, 5, 61, 0).line() == "fold 5/5 · 1:01 elapsed"          # done: nothing left
    assert Step("fold 1/5", 0, 5, 3, None).line() == "fold 1/5 · 0:03 elapsed"        # nothing to go on yet
    assert Step("transfer ssh host-a", 12_400_000, 12_400_000, 2, 0, BYTES).line() == \
        "transfer ssh host-a: 12.4 MB/12.4 MB · 0:02 elapsed"
    assert Step("transfer ssh host-a", 6_200_000, 12_400_000, 2, 2, BYTES).line() == \
        "transfer ssh host-a: 6.2 MB/12.4 MB · 0:02 elapsed · ~0:02 left"


def test_progress_times_the_work_from_its_start():
    clock, steps = Clock(), []
    progress = Progress(steps.append, clock=clock)
    clock.now += 10
    progress.step("fold 1/3", 1, 3)
    clock.now += 20
    progress.step("fold 2/3", 2, 3)
    assert [(s.what, s.done, s.total, s.elapsed, s.left) for s in steps] == [
        ("fold 1/3", 1, 3, 10, 20), ("fold 2/3", 2, 3, 30, 15)]


def test_every_s_keeps_one_step_a_while_but_always_the_last():
    clock, steps = Clock(), []
    progress = Progress(steps.append, every_s=1.0, clock=clock)
    for sent in range(1, 11):          # ten blocks, 0.3 s apart
        clock.now += 0.3
        progress.step("transfer", sent * 100, 1000, BYTES)
    assert [s.done for s in steps] == [100, 500, 900, 1000]


def test_progress_reports_to_the_sink_installed_around_the_work_else_nowhere():
    seen: list[Step] = []
    Progress().step("before", 1, 2)
    with reporting(seen.append):
        Progress().step("inside", 1, 2)
        Progress(lambda _step: None).step("its own sink", 1, 2)
    Progress().step("after", 2, 2)
    NO_PROGRESS.step("never", 1, 1)
    assert [s.what for s in seen] == ["inside"]
