"""What a scoring job leaves behind besides its output: the batch's drift and an MLflow run linked to the version.

    batch_drift(window, reference, cfg)   PSI per feature and of the predictions against the training reference,
                                          judged by the monitoring's own rules and thresholds (configs/monitoring.yaml)
    record_run(registry, mv, ...)         an MLflow run in the pipeline's experiment, tagged with the registered
                                          model, version and the version's training run: input SHA-256, rows
                                          scored and rejected, output, seconds, and the drift

The window is the monitoring's counts of the scored rows on the export's reference bins (what a server
records for its traffic), so a batch and a day of requests are judged by one piece of maths
(``serving.contract.drift``) and one set of rules (``tasks.monitoring.rules``).
"""

from __future__ import annotations

import json

from serving.contract.drift import feature_drift, prediction_drift
from tasks.monitoring.rules import drift_alarms, prediction_alarms
from tasks.monitoring.settings import MonitoringSettings
from tasks.registry.links import tracking_uri
from tasks.registry.runs import _experiment_id

SCORE_TAG = "pipeline.command"


def batch_drift(window: dict, reference: dict, cfg: MonitoringSettings) -> dict:
    """The batch's drift: ``features`` (PSI each), ``prediction`` (PSI, mean shift…), the ``alarms`` the
    monitoring's rules raise on them (warning or critical) and the ``thresholds`` they were judged by."""
    assessed = {"features": feature_drift(window, reference, cfg.min_rows_for_drift),
                "prediction": prediction_drift(window, reference, cfg.min_rows_for_drift)}
    alarms = [a.to_dict() for a in (*drift_alarms(assessed, cfg), *prediction_alarms(assessed, cfg))]
    return {**assessed, "alarms": alarms,
            "thresholds": {"psi": cfg.psi.model_dump(), "prediction": cfg.prediction.model_dump(),
                           "min_rows": cfg.min_rows_for_drift}}


def drift_metrics(drift: dict) -> dict[str, float]:
    """The drift as MLflow metrics: ``psi.<feature>`` and ``psi.prediction`` where measured."""
    out = {f"psi.{name}": f["psi"] for name, f in drift["features"].items() if f.get("psi") is not None}
    if drift["prediction"].get("psi") is not None:
        out["psi.prediction"] = drift["prediction"]["psi"]
    return out


def record_run(registry, mv, result, data: str, drift: dict) -> str:
    """An MLflow run recording one scoring job of version ``mv``; returns its id.

    Args:
        registry: the ``MlflowRegistry`` of the model.
        result: the job's ``ScoreResult``.
    """
    settings, client = registry.settings, registry.client
    tags = {SCORE_TAG: "score", "model_name": registry.name, "model_version": str(mv.version),
            "export_version": result.version, "version_run_id": mv.run_id or "", "input": data,
            "input_sha256": result.input_sha256, "output": result.output, "rejects": result.rejects,
            "drift_alarms": str(len(drift["alarms"]))}
    with tracking_uri(settings.tracking_uri):
        run = client.create_run(_experiment_id(client, settings), run_name=f"score-{registry.name}-v{mv.version}",
                                tags=tags)
        run_id = run.info.run_id
        metrics = {"rows": result.rows, "rows_scored": result.scored, "rows_rejected": result.rejected,
                   "seconds": result.seconds, "rows_per_s": result.rows_per_s, **drift_metrics(drift)}
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        client.log_text(run_id, json.dumps({**result.to_dict(), "drift": drift}, indent=2, default=str),
                        "score_summary.json")
        client.set_terminated(run_id, "FINISHED")
    return run_id


def score_report(summary: dict) -> str:
    """The Prefect artifact of a scoring job, in markdown."""
    r, drift = summary["result"], summary["drift"]
    lines = [f"# Scoring: {summary['model']} version {summary['version']}", "",
             "| | |", "|---|---|",
             f"| input | `{summary['data']}` (SHA-256 `{r['input_sha256'][:16]}…`) |",
             f"| rows | {r['rows']} read, {r['scored']} scored, {r['rejected']} rejected |",
             f"| output | `{r['output']}` (rejects: `{r['rejects']}`) |",
             f"| time | {r['seconds']:.1f} s, {r['rows_per_s']:.0f} rows/s |",
             f"| MLflow run | {summary['run_link']} |", "", "## Drift against the training reference", "",
             "| feature | PSI | status |", "|---|---|---|"]
    lines += [f"| {name} | {f['psi'] if f.get('psi') is not None else '-'} | {f['status']} |"
              for name, f in drift["features"].items()]
    lines += [f"| (prediction) | {drift['prediction'].get('psi', '-')} | {drift['prediction']['status']} |", ""]
    lines += [f"- **{a['level']}**: {a['message']}" for a in drift["alarms"]] or ["No threshold crossed."]
    return "\n".join(lines) + "\n"
