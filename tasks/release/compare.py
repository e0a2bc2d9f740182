"""Champion versus candidate: what a person approving a promotion needs to see.

Both sides come from the versions' own ``metadata.json``: cross-validated metrics,
calibration before and after, and the reference distributions frozen at export. PSI
between the two versions' references says how different the data they were trained on is
(per feature, and for the calibrated predictions).

Numeric references of two versions have different quantile edges (each from its own
training data). The candidate's distribution is re-binned onto the champion's edges, so PSI
is computed over the same bins on both sides: a continuous column by its piecewise-linear CDF
(uniform within each bin, from its min to its max). An integer column's mass sits on the
integers, so spreading it over intervals invents shifts that are not there (two samples of one
Poisson population: PSI ≥ 0.1 in one pair of five). Its edges are cut points between integers,
and two versions share most of them: both sides are merged onto the shared cut points, which is
exact (no assumption about the mass inside a bin) and at worst slightly low; with fewer than two
shared cut points each bin's mass is spread evenly over its integers. A null bin is added where
either side has nulls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from serving.contract.binning import psi
from tasks.constants import HIGHER_IS_BETTER, METRICS, ROLLED_BACK

PSI_MODERATE, PSI_MAJOR = 0.1, 0.25


def _numeric_cdf(ref: dict):
    """Points (x, F(x)) of the reference's piecewise-linear CDF over its non-null values."""
    edges, fractions = list(ref["edges"]), list(ref["fractions"])
    xs = [ref["min"], *edges, ref["max"]]
    cum = np.concatenate([[0.0], np.cumsum(fractions)])
    cum = cum / cum[-1] if cum[-1] > 0 else cum
    xs = np.maximum.accumulate(np.asarray(xs, dtype=np.float64))
    return xs, cum


def rebin_numeric(ref: dict, edges: list[float]) -> list[float]:
    """``ref``'s non-null distribution as fractions over the bins ``edges`` define."""
    xs, cum = _numeric_cdf(ref)
    # Bins are [edge_i, edge_i+1): F at each edge, with the open outer bins ending at 0 and 1.
    at_edges = np.interp(np.asarray(edges, dtype=np.float64), xs, cum, left=0.0, right=1.0)
    bounds = np.concatenate([[0.0], at_edges, [1.0]])
    return [float(x) for x in np.clip(np.diff(bounds), 0.0, None)]


MAX_INTEGER_VALUES = 100_000   # wider integer ranges are re-binned as continuous


def rebin_integer(ref: dict, edges: list[float]) -> list[float]:
    """``rebin_numeric`` for an integer column: each bin's mass spread evenly over its integers."""
    lo, hi = int(np.ceil(ref["min"])), int(np.floor(ref["max"]))
    if hi < lo or hi - lo > MAX_INTEGER_VALUES:
        return rebin_numeric(ref, edges)
    values = np.arange(lo, hi + 1, dtype=np.float64)
    own_bin = np.searchsorted(np.asarray(ref["edges"], dtype=np.float64), values, side="right")
    members = np.bincount(own_bin, minlength=len(ref["fractions"]))
    fractions = np.asarray(ref["fractions"], dtype=np.float64)
    if np.any((fractions > 0) & (members[: fractions.size] == 0)):   # mass on no integer: not integer data
        return rebin_numeric(ref, edges)
    mass = fractions[own_bin] / members[own_bin]
    out = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right"), weights=mass,
                      minlength=len(edges) + 1)
    return [float(x) for x in out / out.sum()]


def merge_integer_bins(a: dict, b: dict) -> tuple[list[float], list[float]] | None:
    """Both integer references' fractions over the bins their shared cut points define, or None
    when they share fewer than two. A cut at edge e separates the integers below ceil(e)."""
    cuts_a, cuts_b = (np.ceil(np.asarray(r["edges"], dtype=np.float64)) for r in (a, b))
    shared = np.asarray(sorted(set(cuts_a.tolist()) & set(cuts_b.tolist())))
    if shared.size < 2:
        return None

    def merge(fractions, cuts):   # own bin i starts at cuts[i-1] and lies inside one merged bin
        lowers = np.concatenate([[-np.inf], cuts])
        return np.bincount(np.searchsorted(shared, lowers, side="right"), weights=np.asarray(fractions),
                           minlength=shared.size + 1).tolist()

    return merge(a["fractions"], cuts_a), merge(b["fractions"], cuts_b)


def _with_nulls(fractions: list[float], null_fraction: float) -> list[float]:
    present = 1.0 - null_fraction
    return [f * present for f in fractions] + [null_fraction]


def _numeric_psi(a: dict, b: dict, is_integer: bool) -> float:
    """PSI of one numeric column: the candidate re-binned onto the champion's edges (or both merged onto the
    cut points they share, for an integer column), a null bin added where either side has nulls."""
    expected, actual = list(a["fractions"]), list(b["fractions"])
    if a["edges"] != b["edges"]:
        merged = merge_integer_bins(a, b) if is_integer else None
        if merged is not None:
            expected, actual = merged
        else:
            actual = (rebin_integer if is_integer else rebin_numeric)(b, a["edges"])
    if a["null_fraction"] or b["null_fraction"]:
        expected, actual = _with_nulls(expected, a["null_fraction"]), _with_nulls(actual, b["null_fraction"])
    return psi(expected, actual)


def _categorical_psi(a: dict, b: dict) -> float:
    """PSI of one categorical column over the categories either side knows, a null bin added where needed."""
    cats = list(dict.fromkeys([*a["categories"], *b["categories"]]))
    expected = [a["frequencies"].get(c, 0.0) for c in cats]
    actual = [b["frequencies"].get(c, 0.0) for c in cats]
    if a["null_fraction"] or b["null_fraction"]:
        expected, actual = _with_nulls(expected, a["null_fraction"]), _with_nulls(actual, b["null_fraction"])
    return psi(expected, actual)


def feature_psi(champion_ref: dict, candidate_ref: dict, integer: frozenset[str] = frozenset()) -> dict[str, float]:
    """PSI (champion as expected, candidate as actual) for every feature both references know, and
    for the calibrated predictions under the key ``__prediction__``. ``integer``: the integer columns."""
    out: dict[str, float] = {}
    candidate_numeric = candidate_ref.get("numeric") or {}
    for name, a in (champion_ref.get("numeric") or {}).items():
        if name in candidate_numeric:
            out[name] = _numeric_psi(a, candidate_numeric[name], name in integer)
    candidate_categorical = candidate_ref.get("categorical") or {}
    for name, a in (champion_ref.get("categorical") or {}).items():
        if name in candidate_categorical:
            out[name] = _categorical_psi(a, candidate_categorical[name])
    pa, pb = champion_ref.get("prediction"), candidate_ref.get("prediction")
    if pa and pb and pa["edges"] == pb["edges"]:
        out["__prediction__"] = psi(pa["fractions"], pb["fractions"])
    return out


def psi_level(value: float) -> str:
    return "major shift" if value >= PSI_MAJOR else "moderate shift" if value >= PSI_MODERATE else "stable"


@dataclass(frozen=True)
class Comparison:
    model: str
    candidate: dict                      # registry version, release, export version, calibration
    champion: dict | None
    metrics: list[dict]                  # metric, champion, candidate, delta, better
    psi: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    same_rows: dict | None = None        # the gate's paired comparison on the same rows (its version tag)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def markdown(self) -> str:
        cand, champ = self.candidate, self.champion
        lines = [f"# Promote {self.model} version {cand['version']}?", ""]
        lines.append(f"Candidate: registry version **{cand['version']}**, release {cand['release']}, "
                     f"export {cand['export_version']}, gate: {cand['gate']}.")
        lines.append(f"Champion: registry version **{champ['version']}**, release {champ['release']}, export "
                     f"{champ['export_version']}." if champ else "Champion: none (this would be the first).")
        lines += ["", "## Cross-validated metrics (calibrated)", "",
                  "| metric | champion | candidate | Δ | |", "|---|---|---|---|---|"]
        for m in self.metrics:
            fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
            delta = "–" if m["delta"] is None else f"{m['delta']:+.4f}"
            verdict = {True: "better", False: "worse", None: ""}[m["better"]]
            lines.append(f"| {m['metric']} | {fmt(m['champion'])} | {fmt(m['candidate'])} | {delta} | {verdict} |")
        lines += _same_rows_lines(self.same_rows)
        lines += ["", "## Calibration", "", "| | champion | candidate |", "|---|---|---|"]
        for key, label in (("method", "method"), ("ece_before", "ECE before calibration"),
                           ("ece_after", "ECE after calibration")):
            a = (champ or {}).get("calibration", {}).get(key)
            b = cand["calibration"].get(key)
            show = lambda v: "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
            lines.append(f"| {label} | {show(a)} | {show(b)} |")
        if self.psi:
            lines += ["", "## Training-data shift (PSI, champion → candidate reference distributions)", "",
                      "| feature | PSI | |", "|---|---|---|"]
            for name, value in sorted(self.psi.items(), key=lambda kv: -kv[1]):
                label = "calibrated predictions" if name == "__prediction__" else name
                lines.append(f"| {label} | {value:.4f} | {psi_level(value)} |")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _same_rows_lines(same: dict | None) -> list[str]:
    if not same:
        return []
    rows = same.get("rows") or {}
    lines = ["", f"## On the same rows (the gate's paired comparison against version {same['against']})", "",
             f"{rows.get('n_rows', '?')} rows ({rows.get('detail', 'source not recorded')}); both shipped models "
             f"scored every row; the interval is a paired bootstrap of candidate − champion "
             f"({same.get('resamples')} resamples, {same.get('confidence') or 0:.0%}).", "",
             "| metric | champion | candidate | Δ | interval | verdict |", "|---|---|---|---|---|---|"]
    for metric, m in (same.get("metrics") or {}).items():
        low, high = m["interval"] if m.get("interval") else (None, None)
        interval = "–" if low is None else f"{low:+.4f} to {high:+.4f}"
        lines.append(f"| {metric} | {m['champion']:.4f} | {m['candidate']:.4f} | {m['difference']:+.4f} | {interval} "
                     f"| {m['verdict']} |")
    return lines


def gate_same_rows(mv) -> dict | None:
    """The gate's comparison on the same rows, from a version's tags (``gate_comparison``), with the version it
    was judged against; None when the gate had no evaluation rows (or the tag is absent or unreadable)."""
    try:
        comparison = json.loads(mv.tags.get("gate_comparison") or "null")
    except ValueError:
        return None
    if not isinstance(comparison, dict) or comparison.get("basis") != "same rows":
        return None
    return {**comparison, "against": mv.tags.get("gate_champion_version", "?")}


def _side(mv, metadata) -> dict:
    return {"version": str(mv.version), "release": metadata.release, "export_version": metadata.version,
            "gate": mv.tags.get("blessed", "unknown").replace("true", "passed").replace("false", "FAILED"),
            "cv_metrics": dict(metadata.cv_metrics),
            "calibration": {k: metadata.calibration.get(k) for k in ("method", "ece_before", "ece_after")}}


def _metric_rows(cand: dict, champ: dict | None) -> list[dict]:
    """Each release metric on both sides, the candidate's change and whether it is for the better."""
    rows = []
    for metric in METRICS:
        b = cand["cv_metrics"].get(metric)
        a = champ["cv_metrics"].get(metric) if champ else None
        delta = None if a is None or b is None else b - a
        better = None if not delta else (delta > 0) == HIGHER_IS_BETTER[metric]
        rows.append({"metric": metric, "champion": a, "candidate": b, "delta": delta, "better": better})
    return rows


def _candidate_notes(cand: dict, champ: dict | None, candidate_mv, psis: dict[str, float]) -> list[str]:
    """What the approver should know from the two versions and the candidate's tags (shift, rollback, gate)."""
    notes = []
    shifted = sorted(n for n, v in psis.items() if v >= PSI_MAJOR)
    if shifted:
        notes.append(f"training data of the two versions differs strongly (PSI ≥ {PSI_MAJOR}) in: "
                     + ", ".join("calibrated predictions" if n == "__prediction__" else n for n in shifted))
    if champ and champ["version"] == cand["version"]:
        notes.append("the candidate already is the champion")
    if candidate_mv.tags.get(ROLLED_BACK):
        back_to = candidate_mv.tags[ROLLED_BACK]
        notes.append(f"this version was champion before and was ROLLED BACK to version {back_to} (the reason is "
                     f"on version {back_to}'s tag rolled_back_to_reason)")
    if candidate_mv.tags.get("gate_reasons") not in (None, "", "[]"):
        notes.append(f"gate reasons: {candidate_mv.tags['gate_reasons']}")
    return notes


def _same_rows_notes(same: dict | None, champ: dict | None) -> list[str]:
    """Whether the metrics shown are on the same rows, and against which champion the gate paired them."""
    if same is None and champ:
        return ["the metrics above are each version's own cross-validation, not the same rows: release with "
                "--eval-data or a schema time_column for a paired comparison"]
    if champ and same["against"] != champ["version"]:
        return [f"the gate's same-rows comparison was against version {same['against']}, which is no longer "
                f"the champion (version {champ['version']} is)"]
    return []


def compare(model: str, candidate_mv, candidate_meta, champion_mv=None, champion_meta=None) -> Comparison:
    """The candidate beside the champion (None: this would be the first) for the person approving it."""
    cand = _side(candidate_mv, candidate_meta)
    champ = _side(champion_mv, champion_meta) if champion_mv is not None else None
    integer = frozenset(c["name"] for c in candidate_meta.schema_.get("columns", []) if c.get("type") == "integer")
    psis = feature_psi(champion_meta.reference, candidate_meta.reference, integer) if champ else {}
    same = gate_same_rows(candidate_mv)
    notes = _candidate_notes(cand, champ, candidate_mv, psis) + _same_rows_notes(same, champ)
    return Comparison(model=model, candidate=cand, champion=champ, metrics=_metric_rows(cand, champ), psi=psis,
                      notes=notes, same_rows=same)
