"""Errors of batch scoring, beside the pipeline's own (``tasks.errors``).

    DataValidationError (tasks.errors)
    └── TooManyRejects   more rows broke the contract than scoring.max_reject_fraction allows; nothing written

Bad input found before a row is read (a missing file or column, an existing output) is a ``ConfigError``; a
version that does not exist or an alias that is not set, a ``RegistryError``; both are one line, exit 2.
"""

from __future__ import annotations

from tasks.errors import DataValidationError, Problem, ReleaseError


class TooManyRejects(DataValidationError):
    """Its message is one line: the counts, the limit and the commonest reasons (``problems`` has them all)."""

    def __init__(self, message: str, problems: list[Problem], source: str) -> None:
        self.problems = list(problems)
        self.source = source
        ReleaseError.__init__(self, message)
