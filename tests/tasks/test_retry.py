import pytest

from tasks.retry import retry

pytestmark = pytest.mark.unit


def _calls(results):
    made, waits = [], []
    it = iter(results)

    def call():
        made.append(1)
        return next(it)

    return call, made, waits


def test_stops_at_the_first_accepted_result_and_waits_between_tries():
    call, made, waits = _calls(["down", "down", "up", "up"])
    assert retry(call, 5, 0.5, done=lambda r: r == "up", sleep=waits.append) == "up"
    assert len(made) == 3 and waits == [0.5, 0.5]


def test_gives_the_last_result_after_every_attempt_and_no_wait_after_it():
    call, made, waits = _calls(["a", "b", "c"])
    assert retry(call, 3, 2.0, done=lambda r: False, sleep=waits.append) == "c"
    assert len(made) == 3 and waits == [2.0, 2.0]


def test_one_attempt_never_waits():
    call, made, waits = _calls(["down"])
    assert retry(call, 1, 9.0, done=lambda r: False, sleep=waits.append) == "down"
    assert waits == []
