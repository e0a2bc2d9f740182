"""Errors raised by the release stages.

    ReleaseError
    ├── ConfigError          configs/*.yaml or the command line is wrong (names the key)
    ├── DataValidationError  the training data breaks the contract (lists every problem)
    ├── TrainingError        the model could not be fitted or exported faithfully
    ├── IntegrityError       an artifact does not match its recorded SHA-256
    ├── RegistryError        MLflow refused or is unreachable
    ├── TransferError        a bundle could not reach a target or the host refused it (names host, step)
    ├── SmokeTestFailed      the served model is not the trained one (lists every check that failed)
    └── QualityGateFailed    the candidate is not good enough (lists every reason)

``serving.errors.ContractError`` (a malformed schema or feature list) is a user
error too; the CLI reports it the same way.
"""

from __future__ import annotations

from serving.errors import InputError, Problem


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


class IntegrityError(ReleaseError):
    pass


class RegistryError(ReleaseError):
    pass


class TransferError(ReleaseError):
    pass


class SmokeTestFailed(ReleaseError):
    def __init__(self, target: str, failures: list[str]) -> None:
        self.target = target
        self.failures = list(failures)
        super().__init__(f"target {target}: smoke test failed:\n" + "\n".join(f"  - {f}" for f in failures))


class QualityGateFailed(ReleaseError):
    def __init__(self, reasons: list[str], version: str | None = None) -> None:
        self.reasons = list(reasons)
        self.version = version
        head = f"model version {version} " if version else "candidate "
        super().__init__(head + "failed the quality gate:\n" + "\n".join(f"  - {r}" for r in self.reasons)
                         + "\nThe version stays registered with tag blessed=false; the champion is unchanged.")
