"""The release flow: validate → train → calibrate → reserve → export → register → evaluate → gate.

The rows the candidate and the champion are compared on: ``eval_data`` (validated like the training
data), else, when the schema names a ``time_column``, the most recent slice of the data, held out from
training before anything is fitted. Neither: the gate compares cross-validated metrics and says so.

The registry version is reserved before anything is written (under the model's release lock, with
its release number): it names the export directory, the host's release and the bundle, so releases
started at once get distinct versions and release numbers. A release that fails after its
reservation marks that version failed; its number is not given again.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger

from flows.models import config_file, settings_for
from flows.outcomes import ends_in, version_outcome
from flows.runs import VersionRun, deploy_blessed
from flows.stages import (
    calibrate_task,
    evaluate_task,
    export_task,
    gate_task,
    holdout_task,
    register_task,
    reserve_task,
    validate_data_task,
)
from flows.training import train_stage
from serving.contract.schema import feature_schema_hash
from tasks.constants import CHALLENGER
from tasks.contract_files import load_feature_list, load_schema
from tasks.lineage import code_lineage
from tasks.registry import MlflowRegistry, input_example
from tasks.release.evaluate import rows_of_file, rows_of_holdout
from tasks.release.reports import release_report


@flow(name="release", flow_run_name="release-{data}", validate_parameters=False)
@ends_in(version_outcome)
def release_flow(data: str, schema: str, feature_list: str, config: str | None = None,
                 targets: list[str] | None = None, targets_file: str | None = None,
                 eval_data: str | None = None, fleet: str | None = None, model: str | None = None) -> dict:
    """Train, calibrate, export, register and gate a new version; if blessed, deploy it to ``targets``
    (none: stop after the gate), or release it to ``fleet`` by its strategy, and promote it. ``eval_data``:
    rows the candidate and the champion are both scored on (default: the most recent rows when the schema
    names a time column). ``model``: the registered model's name instead of the config's ``model_name``.
    Returns the run summary."""
    logger = get_run_logger()
    started = time.perf_counter()
    settings = settings_for(config, model)
    run = VersionRun("release", settings.model_name, started=started)
    with run.failure_reported(data):
        return _release(logger, run, settings, data, schema, feature_list, config, targets,
                        targets_file, eval_data, fleet)


def _release(logger, run: VersionRun, settings, data: str, schema: str,
             feature_list: str, config: str | None, targets: list[str] | None, targets_file: str | None,
             eval_data: str | None, fleet: str | None = None) -> dict:
    timings = run.timings
    with run.stage("contract"):
        contract = load_schema(schema)
        features = load_feature_list(feature_list)
        features.check_against(contract, feature_list)

    with run.stage("validate"):
        full = validate_data_task(data, contract, settings.training.min_rows, settings.training.min_class_rows)
        ds, eval_ds, rows = full, None, None
        if eval_data:   # wins over a time column
            eval_ds = validate_data_task(eval_data, contract, settings.gate.min_eval_rows,
                                         settings.training.min_class_rows)
            rows = rows_of_file(eval_ds)
        elif contract.time_column:
            held = holdout_task(full, contract, settings)
            ds, eval_ds, rows = held.train, held.held_out, rows_of_holdout(held)
    registry = MlflowRegistry(settings)
    with run.stage("champion"):   # a registry that does not answer stops the run here, before training
        champion = registry.champion()
    logger.info("champion: %s", f"version {champion.version}" if champion else "none yet")

    with run.stage("train"):
        trained = train_stage(ds, contract, features, settings)
    report_dir = settings.pipeline_home / "reports" / settings.model_name / \
        f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with run.stage("calibrate"):
        cal = calibrate_task(trained.oof_raw, ds.y, trained.folds, settings.calibration.method,
                             settings.calibration.n_bins, report_dir / "reliability.png")
    with run.stage("reserve"):
        reservation = reserve_task(registry, settings, feature_schema_hash(contract, features))
    run.version, release = reservation.version, reservation.release
    try:
        registry.record_config(config_file(config))   # later commands naming only the model read it again
        with run.stage("export"):
            exported = export_task(trained, cal, ds, contract, features, settings, release,
                                   {"schema_file": str(Path(schema).resolve()),
                                    "feature_list_file": str(Path(feature_list).resolve()), **code_lineage()},
                                   reservation.version)
        with run.stage("register"):
            reg = register_task(registry, reservation, exported, cal, trained, input_example(exported.metadata),
                                {"training": trained.params, "calibration": {"method": cal.method,
                                                                             "n_bins": settings.calibration.n_bins},
                                 "data_rows": ds.n_rows, "eval_rows": rows.n_rows if rows else 0,
                                 "release": release}, {})
    except Exception as exc:
        registry.abandon(reservation, getattr(exc, "release_stage", "register"), exc)
        raise
    run.registered = True
    evaluation = None
    if eval_ds is not None:
        def champion_dir() -> Path:
            return registry.export_dir(registry.get_version(champion.version),
                                       settings.pipeline_home / "registry-cache")

        with run.stage("evaluate"):
            evaluation = evaluate_task(exported.path, eval_ds, rows, settings,
                                       champion.version if champion else None, champion_dir)
    with run.stage("gate"):
        gate = gate_task(exported.metadata.cv_metrics, settings.gate,
                         champion.metrics if champion else None, champion.version if champion else None,
                         evaluation)
        registry.record_gate(reg.version, gate, evaluation)
    timings["flow_total"] = run.elapsed()

    summary = {
        "version": exported.version,
        "release": release,
        "model_dir": str(exported.path),
        "registry": {"name": reg.name, "version": reg.version, "run_id": reg.run_id, "model_uri": reg.model_uri,
                     "alias": CHALLENGER if gate.passed else None},
        "cv_metrics": exported.metadata.cv_metrics,
        # The shipped (model, calibrator) pair on rows it was not trained on, beside the CV metrics.
        "evaluation": {"rows": rows.to_dict(), "metrics": evaluation.candidate} if evaluation else None,
        "calibration": cal.brief,
        "search": trained.search,
        "gate": gate.to_dict(),
        "data": {"path": data, "rows": full.n_rows, "positives": full.positives, "sha256": full.sha256,
                 "training_rows": ds.n_rows},
        "reliability_diagram": str(cal.diagram) if cal.diagram else None,
        "training_rows_per_second": trained.training_rows_per_second,
        "timings": {**timings, "cv": trained.timings["cv_seconds"],
                    "ensemble": trained.timings["ensemble_seconds"]},
    }
    logger.info("release %s: version %s at %s, registered %s v%s, gate %s", release, exported.version,
                exported.path, reg.name, reg.version, "passed" if gate.passed else "FAILED")
    def report(outcome: str) -> None:
        run.report(release_report(summary, registry.run_link(reg.run_id)),
                   f"{reg.name} release {release}: v{reg.version}, {outcome}")

    if gate.passed and (targets or fleet):
        deploy_blessed(run, summary, report, version=reg.version, targets=[] if fleet else targets,
                       targets_file=targets_file, config=config, reason=f"release {release}: gate passed, smoke-tested",
                       fleet=fleet, model=settings.model_name)
        summary["timings"] = {**summary["timings"], "deploy": timings["deploy"],
                              "flow_total": run.elapsed()}
    report(f"gate {'passed' if gate.passed else 'FAILED'}")
    return summary

