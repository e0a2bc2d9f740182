"""Stage 5: the quality gate, in the spirit of TFX's Evaluator.

The candidate must meet absolute bounds and must not be worse than the current
champion by more than the allowed change. Every failing reason is collected
before the verdict; the first model (no champion) is judged on bounds alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.constants import HIGHER_IS_BETTER
from tasks.settings import GateSettings


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    champion_version: str | None = None
    comparison: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "champion_version": self.champion_version,
                "comparison": self.comparison}


def evaluate_gate(candidate: dict[str, float], settings: GateSettings,
                  champion: dict[str, float] | None = None, champion_version: str | None = None) -> GateResult:
    """Judge candidate metrics; returns every reason it fails (empty when it passes)."""
    reasons: list[str] = []
    comparison: dict[str, dict] = {}
    for metric, bound in settings.bounds.items():
        value = candidate.get(metric)
        if value is None:
            reasons.append(f"{metric}: not measured")
            continue
        if bound.min is not None and value < bound.min:
            reasons.append(f"{metric} {value:.4f} is below the minimum {bound.min:g}")
        if bound.max is not None and value > bound.max:
            reasons.append(f"{metric} {value:.4f} is above the maximum {bound.max:g}")
    for metric, allowed in settings.max_regression.items():
        value = candidate.get(metric)
        base = (champion or {}).get(metric)
        if value is None or base is None:
            continue
        worse_by = (base - value) if HIGHER_IS_BETTER[metric] else (value - base)
        comparison[metric] = {"candidate": value, "champion": base, "worse_by": worse_by, "allowed": allowed}
        if worse_by > allowed + 1e-12:
            direction = "below" if HIGHER_IS_BETTER[metric] else "above"
            reasons.append(f"{metric} {value:.4f} is {worse_by:.4f} {direction} champion version "
                           f"{champion_version}'s {base:.4f} (allowed change {allowed:g})")
    return GateResult(passed=not reasons, reasons=reasons, champion_version=champion_version,
                      comparison=comparison)
