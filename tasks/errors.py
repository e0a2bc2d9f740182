"""Errors raised by the release stages.

    ReleaseError
    ├── ConfigError          configs/*.yaml or the command line is wrong (names the key)
    ├── DataValidationError  the training data breaks the contract (lists every problem)
    ├── TrainingError        the model could not be fitted or exported faithfully
    ├── ArtifactIntegrityError  an artifact the pipeline fetched does not match its recorded SHA-256
    ├── RegistryError        MLflow refused or is unreachable
    ├── LockTimeout          another run of the same model held what this one needs for too long (names it)
    ├── TransferError        a bundle could not reach a target or the host refused it (names host, step)
    ├── SmokeTestFailed      the served model is not the trained one (lists every check that failed)
    ├── RestoreFailed        a deploy failed and a host could NOT be put back (names it; check it by hand)
    ├── FleetHalted          a fleet release stopped (a host failed, or the canary's monitor said no); the
    │                        hosts done were put back, the champion did not move
    ├── BalancerError        nginx refused the generated configuration or did not take it up in time
    ├── PostPromotionCheckFailed  promoted, then a target failed the check after promotion (alarm emitted)
    ├── ApprovalTimedOut     a promotion waited for its approval longer than its timeout; nothing changed
    └── StaleApproval        approved, but the champion moved while the promotion waited; nothing changed

A candidate that fails the quality gate is not an exception: it is registered with ``blessed=false``
and every reason (``tasks.release.gate.GateResult``); the CLI exits 3.

``serving.contract.errors.ContractError`` (a malformed schema or feature list) is a user
error too; the CLI reports it the same way. Only ``TransferError`` can be transient; nothing
is retried automatically (a half-done registration or deploy retried would do it twice).
"""

from __future__ import annotations

from serving.contract.errors import InputError, Problem


class ReleaseError(Exception):
    """Base class of every error a release stage raises on purpose."""


class ConfigError(ReleaseError):
    pass


class DataValidationError(ReleaseError):
    def __init__(self, problems: list[Problem], source: str) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(str(InputError(self.problems, source)))


class TrainingError(ReleaseError):
    pass


class ArtifactIntegrityError(ReleaseError):
    """A fetched artifact (an export from the registry) fails the check against its SHA-256.

    The server's own load-time check raises ``serving.contract.errors.IntegrityError``."""


class RegistryError(ReleaseError):
    pass


class LockTimeout(ReleaseError):
    pass


class TransferError(ReleaseError):
    pass


class SmokeTestFailed(ReleaseError):
    """``restore``: what putting the host back did (``tasks.deploy.deploy.Restore``), if it was tried."""

    def __init__(self, target: str, failures: list[str], restore=None) -> None:
        self.target = target
        self.failures = list(failures)
        self.restore = restore
        super().__init__(f"target {target}: smoke test failed:\n" + "\n".join(f"  - {f}" for f in failures)
                         + (f"\n{restore}" if restore is not None else ""))

    def __reduce__(self):   # picklable (Prefect may persist a failed state's exception)
        return type(self), (self.target, self.failures, self.restore)


class RestoreFailed(ReleaseError):
    """A deploy failed, and putting a host back failed too: that host may serve the new version, or nothing."""


class FleetHalted(ReleaseError):
    """A fleet release halted; ``outcome`` (``tasks.deploy.plan.FleetOutcome``) says what became of each host."""

    def __init__(self, message: str, outcome=None) -> None:
        self.outcome = outcome
        super().__init__(message)

    def __reduce__(self):   # picklable (Prefect may persist a failed state's exception)
        return type(self), (str(self), self.outcome)


class BalancerError(ReleaseError):
    pass


class ApprovalTimedOut(ReleaseError):
    pass


class StaleApproval(ReleaseError):
    pass


class PostPromotionCheckFailed(ReleaseError):
    """The version was deployed and promoted, then a target failed the check after promotion.

    Unlike every other deploy error, the champion *has* moved: the critical alarm that was emitted
    (or, without a Prefect events client, a person) rolls it back."""

    def __init__(self, version: str, failures: dict[str, list[str]], alarm_sent: bool) -> None:
        self.version = version
        self.failures = dict(failures)
        self.alarm_sent = alarm_sent
        first = next(iter(self.failures))
        lines = [f"  - {t}: {'; '.join(f)}" for t, f in self.failures.items()]
        then = ("pipeline.alarm.critical was emitted; the rollback deployment answers it where prefect.yaml is "
                "deployed" if alarm_sent else "the alarm could NOT be sent (no Prefect events client)")
        super().__init__(f"version {version} was promoted to champion, but the check after promotion failed:\n"
                         + "\n".join(lines) + f"\n{then}; by hand: python -m flows rollback --target {first}")

    def __reduce__(self):   # picklable (Prefect may persist a failed state's exception)
        return type(self), (self.version, self.failures, self.alarm_sent)
