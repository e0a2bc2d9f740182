"""The runs' reports as markdown: release, deploy, rollback, and their failures.

Built from the flows' summaries, which are plain dicts; nothing secret goes in (tracking URIs
are shown without credentials). ``flows.notify.publish`` puts them in Prefect, one artifact key
per report kind and model, so the UI's Artifacts page keeps each report's history.
"""

from __future__ import annotations

import re


def artifact_key(kind: str, model: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{model}".lower()).strip("-")


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _smoke_rows(deployments: list[dict]) -> list[str]:
    lines = ["| target | action | served | previous | smoke | golden max abs Δp | p50 ms | failures |",
             "|---|---|---|---|---|---|---|---|"]
    for d in deployments:
        s = d["smoke"]
        lines.append(f"| {d['target']} | {d['action']} | {d['version']} | {d['previous_version'] or '–'} | "
                     f"{'passed' if s['passed'] else 'FAILED'} | {_fmt(s['golden_max_abs_diff'])} | "
                     f"{_fmt(s['latency_ms_p50'])} | {'; '.join(s['failures']) or '–'} |")
    return lines


def _code_block(text: str) -> list[str]:
    return ["```", text, "```"]


def _timings_table(timings: dict) -> list[str]:
    return ["## Stage timings (seconds)", "", "| stage | seconds |", "|---|---|",
            *(f"| {k} | {v:.2f} |" for k, v in timings.items())]


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _gate_lines(summary: dict) -> list[str]:
    """The gate's reasons and notes, the champion-vs-candidate comparison and the shipped pair on held-out rows."""
    gate = summary["gate"]
    lines = []
    if gate["reasons"]:
        lines += ["## Gate reasons", ""] + [f"- {r}" for r in gate["reasons"]] + [""]
    if gate.get("notes"):
        lines += ["## Gate notes", ""] + [f"- {n}" for n in gate["notes"]] + [""]
    comp = gate.get("comparison") or {}
    if comp.get("metrics"):
        if comp["basis"] == "same rows":
            rows = comp["rows"]
            lines += [f"## Champion version {gate['champion_version']} vs candidate on the same rows", "",
                      f"{rows['n_rows']} rows ({rows['positives']} positive): {rows['detail']}. Both shipped models "
                      f"(SavedModel + calibrator) scored every row; the interval is a paired, stratified bootstrap "
                      f"({comp['resamples']} resamples, {comp['confidence']:.0%}) of candidate − champion.", ""]
        else:
            lines += [f"## Champion version {gate['champion_version']} vs candidate: NOT on the same rows", "",
                      f"Each version's cross-validated metrics on its own training data: {comp['note']}.", ""]
        lines += ["| metric | champion | candidate | Δ (candidate − champion) | interval | allowed | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for metric, m in comp["metrics"].items():
            interval = f"{_signed(m['interval'][0])} to {_signed(m['interval'][1])}" if m["interval"] else "–"
            lines.append(f"| {metric} | {_fmt(m['champion'])} | {_fmt(m['candidate'])} | {_signed(m['difference'])} | "
                         f"{interval} | {m['allowed']:g} | {m['verdict']} |")
        lines.append("")
    evaluation = summary.get("evaluation")
    if evaluation:
        rows, e = evaluation["rows"], evaluation["metrics"]
        lines += ["## The shipped model on rows it was not trained on", "",
                  f"{rows['n_rows']} rows ({rows['positives']} positive): {rows['detail']}.", "",
                  "| metric | cross-validated (fold models) | shipped model on these rows |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(summary['cv_metrics'].get(k))} | {_fmt(v)} |" for k, v in e.items()]
        lines.append("")
    return lines


def _calibration_lines(cal: dict) -> list[str]:
    """The shipped calibrator, why, and every candidate's cross-fitted metrics side by side."""
    lines = [f"Calibration: {cal['method']}, ECE {_fmt(cal['ece_before'])} before → {_fmt(cal['ece_after'])} after"
             + (f" ({cal['reason']})." if cal.get("reason") else ".")]
    candidates = cal.get("candidates") or {}
    if candidates:
        lines += ["", "| calibration: candidate | Brier | ECE | calibration test p | ROC-AUC | log-loss | chosen |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {_fmt(m.get('brier'))} | {_fmt(m.get('ece'))} | {_fmt(m.get('calibration_p'))} | "
                  f"{_fmt(m.get('roc_auc'))} | {_fmt(m.get('log_loss'))} | "
                  f"{'**yes**' if name == cal['method'] else ''} |" for name, m in candidates.items()]
        lines += ["", "Brier, ECE and log-loss are cross-fitted on the same out-of-fold scores. The calibration test "
                  "p is how often a model whose probabilities are exactly right shows that ECE or more on these rows; "
                  "below 0.01 `auto` sets the candidate aside. ROC-AUC is the calibrator's ranking of those rows: "
                  "the network's own, since each calibrator keeps the order of the scores."]
    return lines


def _search_lines(search: dict | None) -> list[str]:
    """The search over network sizes: every candidate, what it changes, its inner-validation figures."""
    if not search:
        return []
    budget = "no limit" if search["budget_s"] is None else f"{search['budget_s']:g} s"
    lines = [f"Network search: candidate {search['chosen']} chosen ({search['reason']}); "
             f"{search['seconds']:.1f} s of a budget of {budget}.", "",
             "| network: candidate | changes | inner-validation log-loss | inner-validation ROC-AUC | s | status |",
             "|---|---|---|---|---|---|"]
    for c in search["candidates"]:
        changes = ", ".join(f"{k}={v}" for k, v in c["changes"].items()) or "configured"
        status = {"chosen": "**chosen**", "skipped": "not run (budget)"}.get(c["status"], c["status"])
        seconds = "–" if c["seconds"] is None else f"{c['seconds']:.1f}"
        lines.append(f"| {c['index']} | {changes} | {_fmt(c['val_loss'])} | {_fmt(c['val_auc'])} | {seconds} | "
                     f"{status} |")
    lines += ["", "Each candidate is fitted on every fold and judged on the folds' inner validation rows; the "
              "out-of-fold rows behind the metrics above play no part in the choice."]
    return lines


def release_report(summary: dict, run_link: str) -> str:
    reg, gate = summary["registry"], summary["gate"]
    lines = [f"# Release {summary['release']} of {reg['name']}", "",
             f"- registry version: **{reg['version']}** (alias: {reg['alias'] or 'none'})",
             f"- export version: {summary['version']} at `{summary['model_dir']}`",
             f"- MLflow: {run_link}",
             f"- data: `{summary['data']['path']}`, {summary['data']['rows']} rows, "
             f"{summary['data']['positives']} positive, sha256 {summary['data']['sha256'][:16]}…",
             f"- quality gate: **{'passed' if gate['passed'] else 'FAILED'}**", ""]
    lines += _gate_lines(summary)
    lines += ["## Cross-validated metrics (calibrated)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary["cv_metrics"].items()]
    lines += ["", *_calibration_lines(summary["calibration"]), ""]
    search = _search_lines(summary.get("search"))
    lines += [*search, ""] if search else []
    deploy = summary.get("deploy")
    if summary.get("post_promotion_failed"):
        lines += ["## Check after promotion FAILED", "", f"Version {reg['version']} was deployed and promoted to "
                  "champion, then failed the check after promotion; a critical alarm asks for the rollback.", "",
                  *_code_block(summary["deploy_error"]), ""]
    elif summary.get("deploy_error"):
        lines += ["## Deployment FAILED", "", *_restore_lines(summary.get("deploy_restores"),
                                                              summary.get("deploy_champion")),
                  "", *_code_block(summary["deploy_error"]), ""]
    if deploy:
        lines += ["## Deployment and smoke tests", ""] + _smoke_rows(deploy["deployments"])
        lines += ["", f"Champion: {deploy['champion_before'] or 'none'} → {deploy['champion_after']}.", ""]
    elif gate["passed"]:
        lines += ["Not deployed (no targets in this run); it is the challenger.", ""]
    lines += _timings_table(summary["timings"])
    return "\n".join(lines) + "\n"


def recalibration_report(summary: dict, run_link: str) -> str:
    """A recalibration (PATCH release): what it was made from, both pairs on the held-out rows, the gate."""
    reg, gate, src, labels = summary["registry"], summary["gate"], summary["recalibrated_from"], summary["labels"]
    lines = [f"# Recalibration {summary['release']} of {reg['name']}", "",
             f"- registry version: **{reg['version']}** (alias: {reg['alias'] or 'none'})",
             f"- recalibrated from version {src['version']} (release {src['release']}): the same SavedModel "
             f"(digest {summary['model_digest'][:16]}…), a new {summary['calibration']['method']} calibrator",
             f"- export version: {summary['version']} at `{summary['model_dir']}`",
             f"- MLflow: {run_link}",
             f"- labels: {labels['source']}, {labels['rows']} rows, {labels['positives']} positive, sha256 "
             f"{labels['sha256'][:16]}…; split {labels['how']}: {labels['fit_rows']} fitted, "
             f"{labels['holdout_rows']} held out",
             f"- gate (on the held-out rows, against version {src['version']}): "
             f"**{'passed' if gate['passed'] else 'FAILED'}**", ""]
    if gate["reasons"]:
        lines += ["## Gate reasons", ""] + [f"- {r}" for r in gate["reasons"]] + [""]
    lines += ["## Held-out rows: both pairs", "",
              f"| metric | version {src['version']} | recalibrated | difference | interval | allowed |",
              "|---|---|---|---|---|---|"]
    before = f"version_{src['version']}"
    for metric, c in gate["comparison"].items():
        low, high = c["interval"]
        lines.append(f"| {metric} | {_fmt(c[before])} | {_fmt(c['recalibrated'])} | "
                     f"{c['difference']:+.4f} | [{low:+.4f}, {high:+.4f}] | {c['allowed']:g} |")
    lines.append("")
    if summary.get("deploy_error"):
        lines += ["## Deployment FAILED", "", *_restore_lines(summary.get("deploy_restores"),
                                                              summary.get("deploy_champion")),
                  "", *_code_block(summary["deploy_error"]), ""]
    deploy = summary.get("deploy")
    if deploy:
        lines += ["## Deployment and smoke tests", ""] + _smoke_rows(deploy["deployments"])
        lines += ["", f"Champion: {deploy['champion_before'] or 'none'} → {deploy['champion_after']}.", ""]
    elif gate["passed"]:
        lines += ["Not deployed (no targets in this run); it is the challenger.", ""]
    lines += _timings_table(summary["timings"])
    return "\n".join(lines) + "\n"


def failed_release_report(model: str, data: str, stage: str, timings: dict, error: BaseException,
                          version: str | None, registered: bool = True) -> str:
    """A release that failed before its quality gate ran: where, why, and what was left behind."""
    if version and registered:
        left = f"registered as version {version} (no gate verdict; not deployed)"
    elif version:
        left = (f"version {version} had been reserved; it is marked `release_status=failed` with the error, and "
                "its number and release number are not given again; nothing was deployed or promoted")
    else:
        left = "nothing was registered, deployed or promoted"
    lines = [f"# Release of {model} FAILED at {stage}", "", f"- data: `{data}`", f"- {left}", "",
             *_code_block(f"{type(error).__name__}: {error}"), ""]
    if timings:
        lines += _timings_table(timings)
    return "\n".join(lines) + "\n"


def deploy_report(result: dict, title: str) -> str:
    lines = [f"# {title}", "", f"- model: {result['model']}, registry version **{result['registry_version']}**, "
             f"release {result['release']}", f"- bundle: `{result['bundle']['path']}` sha256 "
             f"{result['bundle']['sha256'][:16]}…",
             f"- champion: {result['champion_before'] or 'none'} → {result['champion_after']}"]
    if result.get("approval"):
        lines.append(f"- approved by {result['approval']['approver']}: {result['approval']['reason']}")
    lines += ["", "## Targets", ""] + _smoke_rows(result["deployments"])
    checks = result.get("post_promotion_checks") or []
    if checks:
        lines += ["", "## After promotion", ""]
        lines += [f"- {c['target']}: {'ok' if c['passed'] else 'FAILED: ' + '; '.join(c['failures'])}" for c in checks]
        if not all(c["passed"] for c in checks):
            lines += ["", f"{result.get('alarms_sent', 0)} critical alarm(s) sent; the rollback deployment answers "
                      "them (by hand: `python -m flows rollback --target NAME`)."]
    return "\n".join(lines) + "\n"


def _restore_lines(restores: list[dict] | None, champion: str | None) -> list[str]:
    """What a failed deploy left behind, as it was found: each host put back (or NOT), and the champion."""
    if restores is None:
        return ["- what became of the targets and the champion: see the deploy report"]
    lines = [f"- {r['summary']}" for r in restores] or ["- no target had been switched by this run"]
    if any(r["outcome"] == "FAILED" for r in restores):
        lines.append("- **a target could NOT be put back**: it may serve the new version or nothing; check it with "
                     "`python -m flows status --target NAME`")
    return [*lines, f"- {champion or 'champion: not read again'}"]


def fleet_report(result: dict) -> str:
    """A fleet release (``flows/fleet.py``): each host done, put back, never touched; the canary's verdict."""
    fleet = result["fleet"]
    halted = "error" in result
    lines = [f"# Fleet {fleet['fleet']} ({fleet['strategy']}): {result['model']} version {result['registry_version']}"
             + (" HALTED" if halted else ""), ""]
    if halted:
        lines.append(f"- {result['champion']}")
    else:
        lines.append(f"- champion: {result['champion_before'] or 'none'} → {result['champion_after']}")
    lines += [f"- switched: {', '.join(fleet['done']) or 'none'}"]
    lines += [f"- {h} FAILED: {why}" for h, why in fleet["failed"].items()]
    lines += [f"- {h} put back: {what}" for h, what in fleet["restored"].items()]
    if fleet["untouched"]:
        lines.append(f"- never touched: {', '.join(fleet['untouched'])}")
    canary = fleet.get("canary")
    if canary:
        seen = ": " + "; ".join(canary["reasons"]) if canary["reasons"] else ""
        lines.append(f"- canary: {'HALT' if canary['halt'] else 'clean'} after {canary['seconds']} s, "
                     f"{canary['checks']} check(s){seen}")
    if not halted:
        lines += ["", "## Targets", ""] + _smoke_rows(result["deployments"])
    else:
        lines += ["", *_code_block(result["error"])]
    return "\n".join(lines) + "\n"


def deploy_failed_report(model: str, version: str, targets: str, error: BaseException,
                         restores: list[dict] | None = None, champion: str | None = None) -> str:
    """``restores``: ``Restore.to_dict()`` of each target the run had switched; ``champion``: what the
    registry said afterwards."""
    return "\n".join([f"# Deploy of {model} version {version} FAILED", "", f"- targets: {targets}",
                      *_restore_lines(restores, champion), "", *_code_block(f"{type(error).__name__}: {error}"),
                      ""])


def rollback_report(result: dict) -> str:
    """``result`` from the rollback flow: action is rolled back, aligned, skipped or FAILED."""
    lines = [f"# Rollback of {result['model']} on {result['target']}: {result.get('action', '?')}", "",
             f"- reason: {result['reason']}"]
    if result.get("failing_version"):
        lines.append(f"- alarm about version {result['failing_version']}")
    if "champion_after" in result:
        lines.append(f"- champion: {result['champion_before'] or 'none'} → **{result['champion_after'] or 'none'}**")
    deployment = result.get("deployment")
    if deployment:
        smoke = deployment["smoke"]
        lines.append(f"- {result['target']} now serves export version {deployment['version']} (was "
                     f"{deployment['previous_version'] or 'not running'}; smoke test passed, golden max |Δp| "
                     f"{_fmt(smoke['golden_max_abs_diff'])})")
    if result.get("action") == "skipped":
        lines.append("- nothing changed: the champion already moved and this target does not serve the failing "
                     "version")
    if result.get("error"):
        lines += ["", "Nothing was moved in the registry.", "", *_code_block(result["error"])]
    return "\n".join(lines) + "\n"


def monitor_report(summary: dict) -> str:
    """The monitor's run: each target's probe, the checklist's numbers, what fired and what resolved."""
    lines = [f"# Monitor: {summary['model']}, champion {summary['champion'] or 'none'}", "",
             "| target | serves | probe | alarms now |", "|---|---|---|---|"]
    for t in summary["targets"]:
        f = t["finding"]
        now = "; ".join(f"{a['level']} {a['rule']}" for found in t["alarms"].values() for a in found) or "none"
        lines.append(f"| {f['target']} | {f['served'] or '–'} | {f['finding']} | {now} |")
    for t in summary["targets"]:
        for version, a in t["assessment"].items():
            traffic, labels, pred = a["traffic"], a["labels"], a["prediction"]
            lat = traffic["latency_ms"]
            lines += ["", f"## {t['target']}, version {version}", "",
                      "| metric | value |", "|---|---|",
                      f"| requests (per minute) | {traffic['requests']} ({_fmt(traffic['requests_per_minute'])}) |",
                      f"| latency p50 / p95 / p99 ms | {_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])} |",
                      f"| errors 4xx / 5xx | {traffic['rate_4xx']:.2%} / {traffic['rate_5xx']:.2%} |",
                      f"| mean prediction | {_fmt(pred.get('mean'))} ({pred['status']}) |",
                      f"| labelled rows | {labels.get('n', 0)} |",
                      f"| ECE / ROC-AUC | {_fmt(labels.get('ece'))} / {_fmt(labels.get('roc_auc'))} |"]
            psis = {n: f for n, f in a["features"].items()}
            if psis:
                lines += ["", "| feature | PSI | rows |", "|---|---|---|",
                          *(f"| {n} | {_fmt(f['psi']) if f['psi'] is not None else f['status']} | {f['rows']} |"
                            for n, f in sorted(psis.items()))]
    lines += ["", "## Changes this run", ""]
    lines += [f"- **{c['state']}** {c['level']} `{c['rule']}` on {c['target']} (v{c['version']}): {c['message']} — "
              f"{c['action']} (sent to: {', '.join(c['sent_to']) or 'no channel'})"
              for c in summary["transitions"]] or ["- none"]
    return "\n".join(lines) + "\n"
