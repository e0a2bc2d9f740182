"""Errors raised by the serving package.

    ServingError
    ├── ContractError      a schema or feature list that cannot be used (names the file and key)
    ├── InputError         input rows that break the data contract (carries every Problem)
    └── IntegrityError     a file whose SHA-256 does not match, or an unsafe pickle
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ServingError(Exception):
    """Base class of every error raised by ``serving``."""


class ContractError(ServingError):
    """A schema or feature list is malformed or inconsistent."""


class IntegrityError(ServingError):
    """A model file is not the file the manifest describes."""


@dataclass(frozen=True)
class Problem:
    """One way in which some input breaks the data contract.

    ``rows`` are 1-based data row numbers (the header is not a row).
    """

    column: str | None
    issue: str
    detail: str
    count: int = 0
    rows: tuple[int, ...] = field(default_factory=tuple)
    examples: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        where = f"column '{self.column}'" if self.column else "dataset"
        text = f"{where}: {self.issue}: {self.detail}"
        extras = []
        if self.rows:
            more = f" (+{self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
            extras.append("rows " + ", ".join(map(str, self.rows)) + more)
        if self.examples:
            extras.append("e.g. " + ", ".join(self.examples))
        return text + (f" [{'; '.join(extras)}]" if extras else "")

    def to_dict(self) -> dict:
        return {"column": self.column, "issue": self.issue, "detail": self.detail,
                "count": self.count, "rows": list(self.rows), "examples": list(self.examples)}


class InputError(ServingError):
    """Input that breaks the data contract; ``problems`` lists every violation found."""

    def __init__(self, problems: list[Problem], source: str = "input") -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{source}: {len(self.problems)} problem(s) with the data:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
