"""Champion versus candidate: what a person approving a promotion needs to see.

The view leads with a headline read in five seconds (what differs, by how much, with the gate's
interval; "identical model" when the files' digests match; "no difference" inside the noise), then
one narrow table, then the details. ``to_dict`` keeps everything, headline included.

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
from serving.contract.metadata import CALIBRATOR_FILE
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


# What the comparison shows: metrics to three decimals, so a change under half of the last digit is no change.
DECIMALS = 3
NOISE = 0.5 * 10 ** -DECIMALS
HEADLINE_METRICS = ("roc_auc", "pr_auc", "brier", "ece")   # without the gate's same-rows comparison
LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "brier": "Brier", "ece": "ECE",
          "ece_equal_mass": "ECE (equal mass)", "pr_auc_lift": "PR-AUC lift",
          "brier_skill": "Brier skill", "ece_relative": "relative ECE"}


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.{DECIMALS}f}"


def _signed(value: float) -> str:
    """"+0.012", "−0.008"; a value that shows as zero has no sign."""
    return f"{0.0:.{DECIMALS}f}" if abs(value) < NOISE else f"{value:+.{DECIMALS}f}".replace("-", "−")


def _change(row: dict) -> str:
    """A change as a person reads it: "+0.012 [+0.004, +0.020] better", or "no difference" within the noise."""
    interval = row.get("interval")
    shown = interval and max(abs(interval[0]), abs(interval[1])) >= NOISE   # not a [0.000, 0.000]
    bracket = f" [{_signed(interval[0])}, {_signed(interval[1])}]" if shown else ""
    if row["delta"] is None:
        return "–"
    if not row["differs"]:
        return "no difference" + bracket
    return f"{_signed(row['delta'])}{bracket} {'better' if row['better'] else 'worse'}"


def _psi_shown(value: float) -> str:
    return "< 0.01" if value < 0.005 else f"{value:.2f}"


def _feature(name: str) -> str:
    return "calibrated predictions" if name == "__prediction__" else name


def drift_phrase(psis: dict[str, float]) -> str:
    """The training-data shift in a few words: "none (max PSI 0.03)", "moderate in income (PSI 0.14)", …"""
    if not psis:
        return "not measured"
    ranked = sorted(psis.items(), key=lambda kv: -kv[1])
    top = ranked[0][1]
    if top < PSI_MODERATE:
        return f"none (max PSI {_psi_shown(top)})"
    level = "major" if top >= PSI_MAJOR else "moderate"
    shifted = [(n, v) for n, v in ranked if v >= PSI_MODERATE]
    named = ", ".join(f"{_feature(n)} ({v:.2f})" for n, v in shifted[:3])
    more = f" and {len(shifted) - 3} more" if len(shifted) > 3 else ""
    return f"{level} in {named}{more} (PSI)"


@dataclass(frozen=True)
class Comparison:
    model: str
    candidate: dict                      # registry version, release, export version, calibration, digests
    champion: dict | None
    metrics: list[dict]                  # metric, champion, candidate, delta, better (cross-validated)
    psi: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    same_rows: dict | None = None        # the gate's paired comparison on the same rows (its version tag)

    def to_dict(self) -> dict:
        return {**self.__dict__, "identical": self.identical, "changes": self.changes(), "headline": self.headline()}

    @property
    def identical(self) -> bool:
        """Both versions ship the same files: the SavedModel's digest and the calibrator's SHA-256 match."""
        cand, champ = self.candidate, self.champion
        return bool(champ and cand.get("model_digest") and cand.get("calibrator_sha256")
                    and (cand["model_digest"], cand["calibrator_sha256"])
                    == (champ.get("model_digest"), champ.get("calibrator_sha256")))

    @property
    def paired(self) -> bool:
        """The gate's same-rows comparison is against this champion (so its intervals apply)."""
        return bool(self.champion and self.same_rows and self.same_rows.get("metrics")
                    and self.same_rows.get("against") == self.champion["version"])

    def changes(self) -> list[dict]:
        """The rows the headline and the first table show: the gate's paired differences with their
        intervals where it made them against this champion, else the main cross-validated metrics."""
        if self.paired:
            rows = [{"metric": k, "champion": m["champion"], "candidate": m["candidate"], "delta": m["difference"],
                     "interval": m.get("interval"), "better": (m["difference"] > 0) == HIGHER_IS_BETTER.get(k, True)}
                    for k, m in self.same_rows["metrics"].items()]
        else:
            rows = [{**m, "interval": None} for m in self.metrics if m["metric"] in HEADLINE_METRICS]
        for row in rows:
            low, high = row["interval"] or (None, None)
            inside = low is not None and low <= 0 <= high
            row["differs"] = row["delta"] is not None and abs(row["delta"]) >= NOISE and not inside
        return rows

    def headline(self) -> str:
        """One or two lines a person reads in five seconds: what differs, by how much, with the interval."""
        cand, champ = self.candidate, self.champion
        if champ is None:
            scores = ", ".join(f"{LABELS[r['metric']]} {_num(r['candidate'])}" for r in self.changes())
            return (f"**Candidate v{cand['version']}: no champion yet**, this would be the first promotion.  \n"
                    f"Cross-validated: {scores}.")
        who = f"Candidate v{cand['version']} vs champion v{champ['version']}"
        if self.identical:
            return (f"**{who}: identical model** (same SavedModel and calibrator, SHA-256 "
                    f"{cand['model_digest'][:12]}…, {cand['calibrator_sha256'][:12]}…): no score would change.")
        rows = self.changes()
        moved = ", ".join(f"{LABELS.get(r['metric'], r['metric'])} {_change(r)}" for r in rows if r["differs"])
        same = ", ".join(LABELS.get(r["metric"], r["metric"]) for r in rows if not r["differs"])
        if not moved:
            first = f"**{who}: no difference** in {same}"
        else:
            first = f"**{who}**: {moved}" + (f"; no difference in {same}" if same else "")
        same_network = cand.get("model_digest") and cand["model_digest"] == champ.get("model_digest")
        recalibrated = " Same network, new calibrator." if same_network else ""
        basis = (f"on the same {(self.same_rows.get('rows') or {}).get('n_rows', '?')} rows, "
                 f"{self.same_rows.get('confidence') or 0:.0%} interval" if self.paired
                 else "cross-validated, each on its own data (no interval)")
        return f"{first}.  \nData drift: {drift_phrase(self.psi)}. Basis: {basis}.{recalibrated}"

    def markdown(self) -> str:
        """The headline, the table a decider needs, what to know, then the details."""
        cand, champ = self.candidate, self.champion
        lines = [f"# Promote {self.model} version {cand['version']}?", "", self.headline(), ""]
        if champ is None:
            lines += ["| metric | candidate |", "|---|---|"]
            lines += [f"| {r['metric']} | {_num(r['candidate'])} |" for r in self.changes()]
        else:
            lines += [f"| metric | champion v{champ['version']} | candidate v{cand['version']} | change |",
                      "|---|---|---|---|"]
            lines += [f"| {r['metric']} | {_num(r['champion'])} | {_num(r['candidate'])} | {_change(r)} |"
                      for r in self.changes()]
        if self.notes:
            lines += ["", "**Worth knowing**", ""] + [f"- {n}" for n in self.notes]
        return "\n".join([*lines, "", "## Details", "", *_details(self)]) + "\n"


def _side_line(role: str, side: dict) -> str:
    digests = (f", SavedModel {side['model_digest'][:12]}…, calibrator {(side.get('calibrator_sha256') or '?')[:12]}…"
               if side.get("model_digest") else "")
    return (f"- {role}: registry version {side['version']}, release {side['release']}, export "
            f"{side['export_version']}, gate {side['gate']}{digests}")


def _details(view: Comparison) -> list[str]:
    cand, champ = view.candidate, view.champion
    lines = [_side_line("Candidate", cand), _side_line("Champion", champ) if champ else "- Champion: none yet"]
    lines += _same_rows_lines(view.same_rows)
    lines += ["", "### Cross-validated metrics (calibrated; each version on its own data)", "",
              "| metric | champion | candidate | change |", "|---|---|---|---|"]
    for m in view.metrics:
        if m["champion"] is None and m["candidate"] is None:
            continue
        row = {**m, "differs": m["delta"] is not None and abs(m["delta"]) >= NOISE}
        lines.append(f"| {m['metric']} | {_num(m['champion'])} | {_num(m['candidate'])} | {_change(row)} |")
    lines += ["", "### Calibration", "", "| | champion | candidate |", "|---|---|---|"]
    for key, label in (("method", "method"), ("ece_before", "ECE before"), ("ece_after", "ECE after")):
        a, b = ((side or {}).get("calibration", {}).get(key) for side in (champ, cand))
        show = lambda v: _num(v) if isinstance(v, float) or v is None else str(v)  # noqa: E731
        lines.append(f"| {label} | {show(a)} | {show(b)} |")
    if view.psi:
        lines += ["", "### Training-data shift (PSI, champion → candidate reference distributions)", "",
                  "| feature | PSI | |", "|---|---|---|"]
        lines += [f"| {_feature(n)} | {_psi_shown(v)} | {psi_level(v)} |"
                  for n, v in sorted(view.psi.items(), key=lambda kv: -kv[1])]
    return lines


def _same_rows_lines(same: dict | None) -> list[str]:
    if not same:
        return []
    rows = same.get("rows") or {}
    return [f"- Same rows: the gate's paired comparison against version {same['against']} on "
            f"{rows.get('n_rows', '?')} rows ({rows.get('detail', 'source not recorded')}); both shipped models "
            f"scored every row; intervals: paired bootstrap of candidate − champion ({same.get('resamples')} "
            f"resamples, {same.get('confidence') or 0:.0%}); verdicts: "
            + ", ".join(f"{k} {m.get('verdict')}" for k, m in (same.get("metrics") or {}).items())]


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
            "cv_metrics": dict(metadata.cv_metrics), "model_digest": metadata.model_digest,
            "calibrator_sha256": metadata.files.get(CALIBRATOR_FILE),
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
