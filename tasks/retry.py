"""The one retry of the pipeline: a call tried a fixed number of times, a fixed wait between tries.

The monitor's probes use it so that a host is called down only after every attempt failed
(``host_attempts``, ``host_retry_wait_s`` in ``configs/monitoring.yaml``). The call itself turns the
errors it expects into a result: what counts as done is the caller's to say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


def retry(call: Callable[[], Result], attempts: int, wait_s: float, done: Callable[[Result], bool],
          sleep: Callable[[float], None] = time.sleep) -> Result:
    """Call ``call`` until ``done`` accepts its result or ``attempts`` calls were made.

    Args:
        call: one attempt; it catches what it expects to fail and returns it as a result.
        attempts: how many calls at most (at least one is always made).
        wait_s: the pause between two calls (none after the last).
        done: whether a result ends the retries.
        sleep: how to wait (a test's fake clock).

    Returns:
        The first accepted result, or the last one when none was.
    """
    result = call()
    for _ in range(attempts - 1):
        if done(result):
            break
        sleep(wait_s)
        result = call()
    return result
