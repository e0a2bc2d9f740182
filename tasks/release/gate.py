"""Stage 5: the quality gate, in the spirit of TFX's Evaluator.

Two kinds of threshold, as TFX's ``GenericValueThreshold`` and ``GenericChangeThreshold``:

- **Bounds** (``gate.bounds``) on the candidate's cross-validated metrics: out-of-fold scores of every
  training row, the largest sample the release has. The default bounds are relative to what chance gives
  at the data's positive rate (``tasks.metrics.chance_relative``), so they mean the same on a 5 % and a
  50 % positive rate; the absolute metrics can be bounded too. They are not applied to the
  evaluation rows, which are fewer (ECE in particular reads high on a few hundred rows); those
  figures are reported beside the cross-validated ones.
- **Allowed change against the champion** (``gate.max_regression``), judged on the same rows when
  there are any (``tasks.release.evaluate``): both models' shipped pairs score the evaluation rows
  and a paired, stratified bootstrap gives an interval for each difference.

The change rule. TFX compares the two point values: with an absolute change threshold ``a`` in the
metric's direction, the candidate fails when it is worse than the baseline by more than ``a``. We
keep that as the first condition and add the interval as the second: a metric is a REGRESSION when
the candidate is worse by more than the allowed change AND the whole interval of the change lies on
the worse side of zero (the rows say the candidate is worse, not tied). A change beyond the allowed
one whose interval still reaches no change at all is "cannot tell": listed as a note, not a reason.
So the gate stops regressions the rows show, not noise; and it fails more often than the reading
"fail only when the whole interval lies beyond the allowed change", which lets a clear 0.02 loss of
ROC-AUC through whenever the interval is wide. The stricter reading — pass only when the whole
interval lies within the allowed change — would fail most candidates on a few hundred rows whatever
their quality, so it is not used. ``gate.min_eval_rows`` keeps the intervals from being useless.

Without evaluation rows, or when the champion cannot score them because the contract changed (a
column it needs is gone), the comparison falls back to the cross-validated metrics of each version
on its own training data and is marked NOT like for like, with the reason. When the champion's export
cannot be loaded at all, the gate fails closed: it does not pass a comparison it could not make.

Every failing reason is collected before the verdict; the first model (no champion) is judged on
bounds alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.constants import HIGHER_IS_BETTER
from tasks.release.bootstrap import worse_by, worse_by_interval
from tasks.release.evaluate import Evaluation
from tasks.settings import GateSettings

NOT_SAME_ROWS = "not on the same rows (give --eval-data or name a time column)"
SAME_ROWS, CROSS_VALIDATION = "same rows", "cross-validation"
TOLERANCE = 1e-12


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    champion_version: str | None = None
    comparison: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "champion_version": self.champion_version,
                "comparison": self.comparison, "notes": self.notes}


def _relative_to_chance(metric: str, m: dict[str, float]) -> str:
    """What a chance-relative metric was computed from (``tasks.metrics.chance_relative``), for its reason."""
    rate = m.get("positive_rate")
    if rate is None or metric not in ("pr_auc_lift", "brier_skill", "ece_relative"):
        return ""
    how = {"pr_auc_lift": f"PR-AUC {m.get('pr_auc', float('nan')):.4f} / positive rate {rate:.4f}",
           "brier_skill": f"1 - Brier {m.get('brier', float('nan')):.4f} / the base rate's {rate * (1 - rate):.4f}",
           "ece_relative": f"ECE {m.get('ece', float('nan')):.4f} / minority rate {min(rate, 1 - rate):.4f}"}
    return f" ({how[metric]})"


def _bounds(candidate: dict[str, float], settings: GateSettings) -> list[str]:
    reasons = []
    for metric, bound in settings.bounds.items():
        value = candidate.get(metric)
        if value is None:
            reasons.append(f"{metric}: not measured")
            continue
        said = f"{metric} {value:.4f}{_relative_to_chance(metric, candidate)}"
        if bound.min is not None and value < bound.min:
            reasons.append(f"{said} is below the minimum {bound.min:g}")
        if bound.max is not None and value > bound.max:
            reasons.append(f"{said} is above the maximum {bound.max:g}")
    return reasons


def _cross_validated(candidate: dict[str, float], settings: GateSettings, champion: dict[str, float],
                     version: str | None, note: str) -> tuple[dict, list[str]]:
    """Each version's cross-validated metrics on its own data, with the point rule."""
    rows, reasons = {}, []
    for metric, allowed in settings.max_regression.items():
        value, base = candidate.get(metric), champion.get(metric)
        if value is None or base is None:
            continue
        worse = worse_by(metric, value - base)
        failed = worse > allowed + TOLERANCE
        rows[metric] = {"candidate": value, "champion": base, "difference": value - base, "interval": None,
                        "worse_by": worse, "allowed": allowed, "verdict": "REGRESSION" if failed else "ok"}
        if failed:
            direction = "below" if HIGHER_IS_BETTER[metric] else "above"
            reasons.append(f"{metric} {value:.4f} is {worse:.4f} {direction} champion version {version}'s "
                           f"{base:.4f} (allowed change {allowed:g}; cross-validated, {NOT_SAME_ROWS})")
    return {"basis": CROSS_VALIDATION, "like_for_like": False, "note": note, "rows": None, "resamples": None,
            "confidence": None, "metrics": rows}, reasons


def _paired(ev: Evaluation, settings: GateSettings) -> tuple[dict, list[str], list[str]]:
    """The change rule of the module docstring on the paired differences."""
    rows, reasons, notes = {}, [], []
    n, level = ev.rows.n_rows, f"{ev.confidence:.0%}"
    for metric, allowed in settings.max_regression.items():
        value, base = ev.candidate[metric], ev.champion[metric]
        diff, interval = ev.difference[metric], ev.interval[metric]
        worse = worse_by(metric, diff)
        worse_lo, _ = worse_by_interval(metric, interval)
        beyond = worse > allowed + TOLERANCE
        verdict = "REGRESSION" if beyond and worse_lo > 0 else "cannot tell" if beyond else "ok"
        rows[metric] = {"candidate": value, "champion": base, "difference": diff, "interval": list(interval),
                        "worse_by": worse, "allowed": allowed, "verdict": verdict}
        said = (f"{metric} on the same {n} rows: {value:.4f} against champion version {ev.champion_version}'s "
                f"{base:.4f}, {worse:.4f} worse (allowed change {allowed:g}); {level} interval of the "
                f"difference {interval[0]:+.4f} to {interval[1]:+.4f}")
        if verdict == "REGRESSION":
            reasons.append(f"{said}, all of it worse")
        elif verdict == "cannot tell":
            notes.append(f"{said}, which includes no change: these rows cannot tell the two apart, so it is not "
                         "counted as a regression (more evaluation rows narrow the interval)")
    return {"basis": SAME_ROWS, "like_for_like": True, "note": None, "rows": ev.rows.to_dict(),
            "resamples": ev.resamples, "confidence": ev.confidence, "metrics": rows}, reasons, notes


def evaluate_gate(candidate: dict[str, float], settings: GateSettings,
                  champion: dict[str, float] | None = None, champion_version: str | None = None,
                  evaluation: Evaluation | None = None) -> GateResult:
    """Judge a candidate; returns every reason it fails (empty when it passes).

    Args:
        candidate: its cross-validated metrics (the bounds apply to these).
        champion: the champion's cross-validated metrics (the fallback comparison), None without one.
        evaluation: both versions scored on the same rows (``tasks.release.evaluate``), if there are rows.
    """
    reasons = _bounds(candidate, settings)
    notes: list[str] = []
    comparison: dict = {}
    if champion_version is not None:
        if evaluation is not None and evaluation.champion is not None:
            comparison, failed, notes = _paired(evaluation, settings)
            reasons += failed
        elif evaluation is not None and evaluation.champion_unavailable:
            reasons.append(f"champion version {champion_version} could not be scored on the evaluation rows "
                           f"({evaluation.champion_problem}); the gate does not pass a comparison it could not "
                           "make: make the champion's export available in the registry, then run again")
            comparison = {"basis": None, "like_for_like": False, "note": evaluation.champion_problem,
                          "rows": evaluation.rows.to_dict(), "resamples": None, "confidence": None, "metrics": {}}
        elif champion:
            note = NOT_SAME_ROWS if evaluation is None else (
                f"champion version {champion_version} was not scored on the evaluation rows "
                f"({evaluation.champion_problem}); compared on cross-validated metrics instead, {NOT_SAME_ROWS}")
            comparison, failed = _cross_validated(candidate, settings, champion, champion_version, note)
            reasons += failed
            notes.append(f"comparison with champion version {champion_version}: {note}")
    return GateResult(passed=not reasons, reasons=reasons, champion_version=champion_version,
                      comparison=comparison, notes=notes)
