"""The recalibration flow (a PATCH release): labels → split → refit → reserve → build → register → gate.

The guide's action for an ECE alarm. Version N's network is kept byte for byte; only the calibrator
is refitted, on recent labelled rows (a CSV, or the labels the targets' servers collected through
``POST /feedback``), and judged against N's calibrator on held-out rows of the same labels. A
blessed recalibration goes through the usual deploy and promotion (``deploy_flow``) when targets
are given, exactly as a release does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger

from flows.models import settings_for
from flows.outcomes import ends_in, version_outcome
from flows.runs import VersionRun, deploy_blessed
from flows.stages import (
    build_recalibrated_task,
    labelled_rows_task,
    recalibration_gate_task,
    refit_task,
    reserve_patch_task,
)
from serving.contract.model import LoadedModel
from tasks.constants import CHALLENGER, CHAMPION, FEEDBACK
from tasks.deploy.targets import load_targets, pick_targets
from tasks.errors import RegistryError
from tasks.lineage import code_lineage
from tasks.registry import MlflowRegistry, input_example
from tasks.release.labels import split_rows
from tasks.release.reports import recalibration_report


@flow(name="recalibrate", flow_run_name="recalibrate-v{version}", validate_parameters=False)
@ends_in(version_outcome)
def recalibrate_flow(version: str | int | None = None, labels: str = FEEDBACK, targets: list[str] | None = None,
                     targets_file: str | None = None, config: str | None = None,
                     label_targets: list[str] | None = None, model: str | None = None) -> dict:
    """Refit version ``version``'s calibrator (default: the champion's) on ``labels`` (a CSV, or ``feedback``:
    what the servers of ``label_targets``, else ``targets``, else the local target collected), register it as
    a PATCH release, gate it on held-out labelled rows; if blessed and ``targets`` are given, deploy and
    promote it. ``model``: the registered model's name instead of the config's ``model_name``."""
    logger = get_run_logger()
    started = time.perf_counter()
    settings = settings_for(config, model)
    run = VersionRun("recalibration", settings.model_name, started=started)
    with run.failure_reported(str(labels)):
        return _recalibrate(logger, run, settings, version, labels, targets, targets_file,
                            config, label_targets or targets or ["local"])


def _source_version(registry: MlflowRegistry, version: str | int | None):
    if version is not None and str(version) != "":
        return registry.get_version(str(version))
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        raise RegistryError(f"'{registry.name}' has no champion to recalibrate; name a version with --version")
    return champion


def _recalibrate(logger, run: VersionRun, settings, version, labels: str,
                 targets: list[str] | None, targets_file: str | None, config: str | None,
                 label_targets: list[str]) -> dict:
    timings = run.timings
    registry = MlflowRegistry(settings)
    with run.stage("source"):
        mv = _source_version(registry, version)
        source_dir = registry.export_dir(mv, settings.pipeline_home / "registry-cache")   # SHA-256 checked
        source = LoadedModel.load(source_dir, mv.tags.get("metadata_sha256"))
    old = source.metadata
    logger.info("recalibrating %s version %s (release %s) from %s", registry.name, mv.version, old.release, labels)
    with run.stage("labels"):
        readers = [] if labels != FEEDBACK else pick_targets(load_targets(targets_file, settings.pipeline_home),
                                                             label_targets,
                                                             targets_file or "configs/targets.yaml")
        rows = labelled_rows_task(labels, source, readers)
        rc = settings.recalibration
        split = split_rows(rows, rc.holdout_fraction, rc.min_class_labels, settings.seed)
    with run.stage("refit"):
        recal = refit_task(rows, split, settings, source)
    with run.stage("reserve"):
        reservation = reserve_patch_task(registry, settings, old.release, old.feature_schema_hash)
    run.version, release = reservation.version, reservation.release
    lineage = {**code_lineage(), "recalibrated_from": old.version}
    try:
        with run.stage("export"):
            exported = build_recalibrated_task(source, recal, rows, settings, reservation.version, release, lineage)
        with run.stage("register"):
            cal = recal.calibration
            metrics = {f"cv_{k}": v for k, v in exported.metadata.cv_metrics.items()}
            metrics |= {f"holdout_before_{k}": v for k, v in recal.holdout_before.items()}
            metrics |= {f"crossfit_{k}": v for k, v in cal.metrics_after.items()}
            metrics |= {"ece_before": recal.holdout_before["ece"], "ece_after": recal.holdout_after["ece"],
                        "export_fidelity_max_abs_diff": exported.fidelity_max_abs_diff,
                        "golden_max_abs_diff": exported.golden_max_abs_diff, "labelled_rows": rows.n}
            reg = registry.register_recalibrated(
                reservation, exported=exported, input_example=input_example(exported.metadata),
                params={"recalibrated_from": old.version, "from_release": old.release, "labels": rows.source,
                        "calibration": {"method": cal.method, "n_bins": settings.calibration.n_bins},
                        "recalibration": rc.model_dump(), "split": split.to_dict(rows), "release": release},
                metrics=metrics, artifacts=[],
                extra_tags={"recalibrated_from": old.version, "labels_sha256": rows.sha256})
    except Exception as exc:
        registry.abandon(reservation, getattr(exc, "release_stage", "register"), exc)
        raise
    run.registered = True
    with run.stage("gate"):
        gate = recalibration_gate_task(rows, recal, source, settings)
        registry.record_gate(reg.version, gate)
    timings["flow_total"] = run.elapsed()
    summary = {
        "version": exported.version, "release": release, "model_dir": str(exported.path),
        "recalibrated_from": {"version": str(mv.version), "release": old.release, "model_dir": str(source_dir)},
        "model_digest": exported.metadata.model_digest,
        "registry": {"name": reg.name, "version": reg.version, "run_id": reg.run_id, "model_uri": reg.model_uri,
                     "alias": CHALLENGER if gate.passed else None},
        "labels": {"source": rows.source, "sha256": rows.sha256, "rows": rows.n, "positives": int(rows.y.sum()),
                   **split.to_dict(rows)},
        "calibration": {"method": recal.calibration.method, "ece_before": recal.holdout_before["ece"],
                        "ece_after": recal.holdout_after["ece"]},
        "holdout": {f"version_{old.version}": recal.holdout_before, "recalibrated": recal.holdout_after},
        "cv_metrics": exported.metadata.cv_metrics,
        "gate": gate.to_dict(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings": timings,
    }
    logger.info("recalibration %s: version %s at %s, registered %s v%s, gate %s", release, exported.version,
                Path(exported.path), reg.name, reg.version, "passed" if gate.passed else "FAILED")

    def report(outcome: str) -> None:
        run.report(recalibration_report(summary, registry.run_link(reg.run_id)),
                   f"{reg.name} recalibration {release}: v{reg.version}, {outcome}")

    if gate.passed and targets:
        deploy_blessed(run, summary, report, version=reg.version, targets=targets, targets_file=targets_file,
                       config=config, reason=f"recalibration {release} of version {mv.version}: gate passed, "
                                             "smoke-tested", model=settings.model_name)
        summary["timings"] = {**timings, "flow_total": run.elapsed()}
    report(f"gate {'passed' if gate.passed else 'FAILED'}")
    return summary
