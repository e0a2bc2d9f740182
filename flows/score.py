"""The ``score`` flow: a registered version scores a file in chunks, with a record of what scored what.

Resolve the version (a number or an alias), take its export SHA-256 checked and load it as a server does
(golden rows included), check the job, score it serially (``tasks.scoring.job``), judge the batch's drift
against the training reference with the monitoring's PSI and thresholds, record an MLflow run linked to the
version and publish the summary as the ``score-<model>`` artifact. Rows breaking the contract beyond
``scoring.max_reject_fraction`` end the run ``BadInput`` with nothing written.
"""

from __future__ import annotations

import numpy as np
from prefect import flow, get_run_logger

from flows.models import settings_for
from flows.notify import publish
from flows.outcomes import ends_in
from serving.monitoring.counts import Aggregate, feature_bins
from tasks.monitoring.settings import load_monitoring
from tasks.registry import MlflowRegistry
from tasks.scoring.job import load_verified, plan_job, resolve, run_job
from tasks.scoring.record import batch_drift, record_run, score_report

DEFAULT_PREDICTION_EDGES = [0.1 * i for i in range(1, 10)]   # as the server's recorder, without a reference


class BatchCounts:
    """The scored rows counted as a server counts its traffic (``serving.monitoring.counts``), on the version's
    reference bins: what the monitoring's drift maths reads."""

    def __init__(self, metadata) -> None:
        reference = metadata.reference or {}
        self.bins = feature_bins(metadata)
        self.edges = np.asarray(reference.get("prediction", {}).get("edges") or DEFAULT_PREDICTION_EDGES)
        self.aggregate = Aggregate()

    def add(self, columns: dict[str, np.ndarray], probability: np.ndarray) -> None:
        self.aggregate.add_scored(self.bins, self.edges, columns, probability)

    def window(self) -> dict:
        return self.aggregate.to_dict(self.bins, self.edges)


def score_outcome(summary: dict) -> tuple[str, str]:
    r, alarms = summary["result"], summary["drift"]["alarms"]
    done = f"v{summary['version']}: {r['scored']} rows scored, {r['rejected']} rejected, to {r['output']}"
    if alarms:
        return "ScoredWithDrift", f"{done}; drift: " + "; ".join(a["message"] for a in alarms[:3])
    return "Scored", done


@flow(name="score", validate_parameters=False)
@ends_in(score_outcome)
def score_flow(data: str, out: str, version: str = "champion", keep: list[str] | None = None,
               overwrite: bool = False, config: str | None = None, monitoring: str | None = None,
               model: str | None = None) -> dict:
    """Score ``data`` into ``out`` with ``version`` (a number, champion or challenger) of the model."""
    logger = get_run_logger()
    settings = settings_for(config, model)
    cfg = load_monitoring(monitoring)
    registry = MlflowRegistry(settings)
    mv = resolve(registry, version)
    loaded = load_verified(registry, mv, settings.pipeline_home / "registry-cache")
    logger.info("version %s of %s verified (files, calibrator, golden rows)", mv.version, registry.name)
    job = plan_job(data, out, loaded.metadata, keep or [], overwrite, settings)
    counts = BatchCounts(loaded.metadata)
    result = run_job(job, loaded, counts.add)
    drift = batch_drift(counts.window(), loaded.metadata.reference, cfg)
    for alarm in drift["alarms"]:
        logger.warning("drift %s: %s", alarm["level"], alarm["message"])
    run_id = record_run(registry, mv, result, data, drift)
    summary = {"model": registry.name, "version": str(mv.version), "export_version": result.version,
               "data": data, "result": result.to_dict(), "drift": drift, "run_id": run_id,
               "run_link": registry.run_link(run_id)}
    logger.info("%d rows scored, %d rejected in %.1f s; MLflow run %s", result.scored, result.rejected,
                result.seconds, run_id)
    publish("score", registry.name, score_report(summary),
            f"v{mv.version}: {result.scored} scored, {result.rejected} rejected, {len(drift['alarms'])} drift alarm(s)")
    return summary
