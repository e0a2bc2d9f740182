"""What a run that makes a version (a release, a recalibration) shares: its stage timings, its one report,
and the deploy and promotion of a blessed version.

A run reports exactly once: the full report once its gate ran (it says itself when the deploy after it
failed), else a failure report naming the stage that failed, the version it had reserved and whether
that version was registered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flows.deploy import deploy_flow
from flows.notify import publish
from tasks.constants import CHAMPION
from tasks.errors import PostPromotionCheckFailed
from tasks.release.reports import failed_release_report


@dataclass
class VersionRun:
    """How far a release-like run got, for its report."""

    what: str                  # release | recalibration: names the run and its Prefect artifact
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    version: str | None = None     # the registry version reserved
    registered: bool = False
    reported: bool = False
    started: float = field(default_factory=time.perf_counter)   # time.perf_counter() when the run began

    def elapsed(self) -> float:
        """Seconds since the run began (the summary's ``flow_total``)."""
        return round(time.perf_counter() - self.started, 3)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time stage ``name``; an error raised in it carries the stage (``release_stage``) for the report."""
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            if not hasattr(exc, "release_stage"):
                exc.release_stage = name
            raise
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)

    def report(self, markdown: str, headline: str) -> None:
        self.reported = True
        publish(f"{self.what}-report", self.model, markdown, headline)

    @contextmanager
    def failure_reported(self, source: str) -> Iterator[None]:
        """On an error before the run's own report, publish the failure report (``source``: what the run
        was made from), then re-raise."""
        try:
            yield
        except Exception as exc:
            if not self.reported:
                failed_at = getattr(exc, "release_stage", self.what)
                publish(f"{self.what}-report", self.model,
                        failed_release_report(self.model, source, failed_at, self.timings, exc, self.version,
                                              self.registered),
                        f"{self.model} {self.what}: FAILED at {failed_at}")
            raise


def deploy_blessed(run: VersionRun, summary: dict, report: Callable[[str], None], *, version: str,
                   targets: list[str], targets_file: str | None, config: str | None, reason: str,
                   fleet: str | None = None, model: str | None = None) -> None:
    """Deploy a blessed version to ``targets`` (or ``fleet``) and promote it (``deploy_flow``), into
    ``summary``; when that fails, the summary says what became of the hosts and the champion,
    ``report(outcome)`` is sent and the error raised."""
    try:
        with run.stage("deploy"):
            summary["deploy"] = deploy_flow(version=version, targets=targets, targets_file=targets_file,
                                            config=config, reason=reason, fleet=fleet, model=model)
    except Exception as exc:
        summary["deploy_error"] = str(exc)
        summary["deploy_restores"] = getattr(exc, "restores", None)   # what deploy_flow found afterwards
        summary["deploy_champion"] = getattr(exc, "champion", None)
        if getattr(exc, "outcome", None) is not None:                  # a fleet release: each host's outcome
            summary["deploy_fleet"] = exc.outcome.to_dict()
        if isinstance(exc, PostPromotionCheckFailed):   # the champion did move
            summary["post_promotion_failed"] = True
            summary["registry"]["alias"] = CHAMPION
        report("check after promotion FAILED" if summary.get("post_promotion_failed") else "deploy FAILED")
        raise
    summary["registry"]["alias"] = CHAMPION
