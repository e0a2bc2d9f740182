"""A fleet release as a plan, and the decisions along it: plain values, no hosts touched here.

``plan`` turns a fleet into phases (the canary, then batches; or one phase with every host).
``halt`` says, when a phase fails, which hosts go back and which were never touched.
The canary's verdict is the monitor's (``tasks.monitoring.canary``).
``FleetOutcome`` is what the report and the CLI say about each host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tasks.deploy.fleets import Fleet

ALL, BATCH, CANARY = "all", "batch", "canary"


@dataclass(frozen=True)
class Phase:
    kind: str                  # all | batch | canary
    hosts: tuple[str, ...]
    drain: bool                # out of the balancer's rotation while they swap
    pause_after_s: float = 0   # rolling: the wait before the next batch


def batches(hosts: list[str], size: int) -> list[list[str]]:
    """``hosts`` in order, ``size`` at a time (the last batch may be smaller)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


def _rolling(hosts: list[str], fleet: Fleet, drain: bool) -> list[Phase]:
    groups = batches(hosts, fleet.batch_size)
    return [Phase(BATCH, tuple(g), drain, fleet.pause_s if i + 1 < len(groups) else 0)
            for i, g in enumerate(groups)]


def plan(fleet: Fleet) -> list[Phase]:
    """The phases of a release to ``fleet``; hosts are drained only where a balancer fronts the fleet
    (all-at-once swaps in place: every host hot-swaps, so there is no host to send traffic to instead)."""
    hosts, drain = list(fleet.targets), fleet.balancer is not None
    if fleet.strategy == "all-at-once":
        return [Phase(ALL, tuple(hosts), False)]
    if fleet.strategy == "rolling":
        return _rolling(hosts, fleet, drain)
    first, rest = hosts[:fleet.canary.hosts], hosts[fleet.canary.hosts:]
    tail = [Phase(ALL, tuple(rest), False)] if fleet.canary.then == "all-at-once" else _rolling(rest, fleet, drain)
    return [Phase(CANARY, tuple(first), drain), *tail]


@dataclass(frozen=True)
class Halt:
    restore: tuple[str, ...]     # switched to the new version earlier: back to their previous one (last first)
    untouched: tuple[str, ...]   # never switched: left as they are


def halt(phases: list[Phase], done: list[str], failed: list[str]) -> Halt:
    """After ``failed`` hosts of a phase could not switch: every host that did (``done``, in this or an earlier
    phase) goes back, newest first; the hosts of later phases, and any of this one not reached, stay as they are."""
    touched = set(done) | set(failed)
    every = [h for p in phases for h in p.hosts]
    return Halt(tuple(reversed(done)), tuple(h for h in every if h not in touched))


@dataclass
class FleetOutcome:
    """What became of each host of a fleet release."""

    fleet: str
    strategy: str
    done: list[str] = field(default_factory=list)          # switched to the new version and passed
    failed: dict[str, str] = field(default_factory=dict)   # host -> why it could not switch
    restored: dict[str, str] = field(default_factory=dict)  # host -> what putting it back did
    untouched: list[str] = field(default_factory=list)
    canary: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.restored and not (self.canary or {}).get("halt")

    def summary(self) -> str:
        parts = [f"done: {', '.join(self.done) or '-'}"]
        if self.failed:
            parts.append("failed: " + "; ".join(f"{h} ({why})" for h, why in self.failed.items()))
        if self.restored:
            parts.append("put back: " + "; ".join(f"{h} ({what})" for h, what in self.restored.items()))
        if self.untouched:
            parts.append(f"never touched: {', '.join(self.untouched)}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}
