"""What two runs of one model must not do at once, held for the whole of it.

    release   read the latest release number and reserve the next registry version
    serving   a deploy (with its promotion and the check after it), a rollback: whoever started the
              run (a deployment, its trigger, the promote flow or ``python -m flows``), so the CLI's
              rollback queues behind the rollback deployment's runs and the other way round

Two locks, always in this order: the pipeline home's file lock (``tasks/locks.py``: every run on this
home, the embedded default) and, where the Prefect server has a global concurrency limit named
``pipeline-<what>-<model>``, one slot of it: workers on other machines sharing one registry (a team
setup: ``prefect gcl create pipeline-release-credit-risk --limit 1``, and the same for ``serving``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect import get_run_logger

from tasks.errors import LockTimeout
from tasks.locks import held
from tasks.settings import Settings


def limit_name(what: str, model: str) -> str:
    """The Prefect global concurrency limit a team setup creates to serialize ``what`` across machines."""
    return f"pipeline-{what}-{model}"


def _limit_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return True


@contextlib.contextmanager
def _global_slot(name: str, purpose: str, timeout_s: float) -> Iterator[None]:
    """One slot of the global concurrency limit ``name`` if the server has one; else nothing to take."""
    if not _limit_exists(name):
        yield
        return
    from prefect.concurrency.sync import concurrency

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True))
        except TimeoutError:
            raise LockTimeout(f"{purpose} waited {timeout_s:g} s for a slot of the Prefect global concurrency "
                              f"limit '{name}'; try again when the run holding it has finished") from None
        yield


@contextlib.contextmanager
def exclusive(settings: Settings, what: str, purpose: str) -> Iterator[None]:
    """Hold ``what`` (release or serving) for this model for the block; wait up to ``lock_timeout_s``.

    Raises:
        LockTimeout: another run held it longer (the message names it when it is on this home).
    """
    logger = get_run_logger()
    with held(settings.pipeline_home, settings.model_name, what, purpose, settings.lock_timeout_s,
              on_wait=logger.warning):
        with _global_slot(limit_name(what, settings.model_name), purpose, settings.lock_timeout_s):
            yield
