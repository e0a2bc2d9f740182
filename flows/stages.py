"""The release stages as Prefect tasks: the only place where ``tasks`` meets Prefect.

Each wrapper calls one plain function of a stage package, logs a one-line summary to the run
and returns the stage's typed result. Names, caching and rollback hooks live here; the stage
modules import no Prefect. No retries: a half-finished registration or deploy retried would
register or switch twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from flows.locks import exclusive
from serving.contract.metadata import ModelMetadata
from serving.contract.model import LoadedModel
from serving.contract.schema import FeatureList, Schema
from tasks.constants import FEEDBACK, MODEL_TYPE
from tasks.deploy.deploy import Deployment, Restore, deploy_to, restore
from tasks.deploy.package import Bundle, package_version
from tasks.deploy.targets import Target
from tasks.deploy.transports import transport_for
from tasks.registry import MlflowRegistry, RegisteredVersion, Reservation
from tasks.release.evaluate import EvalRows, Evaluation, evaluate_on_rows
from tasks.release.gate import GateResult, evaluate_gate
from tasks.release.labels import LabelledRows, Split, labels_from_csv, labels_from_feedback
from tasks.release.recalibrate import Recalibration, build_recalibrated, judge, measure, refit
from tasks.release.versioning import next_patch, next_release
from tasks.settings import GateSettings, Settings
from tasks.training.calibrate import CalibrationResult, calibrate
from tasks.training.data import Dataset, HoldOut, hold_out_latest, load_dataset
from tasks.training.export import ExportedModel, export_model
from tasks.training.train import TrainResult, train


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data_task(path: str, schema: Schema, min_rows: int, min_class_rows: int) -> Dataset:
    ds = load_dataset(path, schema, min_rows, min_class_rows)
    get_run_logger().info("%s: %d rows, %d positive, sha256 %s…", path, ds.n_rows, ds.positives, ds.sha256[:12])
    return ds


@task(name="train", cache_policy=NO_CACHE)
def train_task(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings) -> TrainResult:
    result = train(ds, schema, features, settings)
    get_run_logger().info("trained %s: %d folds in %.1fs, an ensemble of %d fold models, %.0f rows/s",
                          MODEL_TYPE, len(result.folds), result.timings["cv_seconds"], result.ensemble_members,
                          result.training_rows_per_second)
    return result


@task(name="calibrate", cache_policy=NO_CACHE)
def calibrate_task(raw: np.ndarray, y: np.ndarray, folds: list, method: str, n_bins: int,
                   diagram_path: Path | None) -> CalibrationResult:
    result = calibrate(raw, y, folds, method, n_bins, diagram_path)
    get_run_logger().info("calibrated (%s, %s): ECE %.4f -> %.4f (cross-fitted), brier %.4f -> %.4f", result.method,
                          result.reason, result.metrics_before["ece"], result.metrics_after["ece"],
                          result.metrics_before["brier"], result.metrics_after["brier"])
    return result


@task(name="reserve-version", cache_policy=NO_CACHE)
def reserve_task(registry: MlflowRegistry, settings: Settings, feature_schema_hash: str) -> Reservation:
    """The next registry version and its release number, under the model's release lock: two releases
    at once read the same latest release, so reading it and taking the version must not interleave."""
    with exclusive(settings, "release", "reserving the next version"):
        reservation = registry.reserve(feature_schema_hash,
                                       lambda prior, _taken: next_release(prior, feature_schema_hash))
    get_run_logger().info("reserved %s version %s for release %s", reservation.name, reservation.version,
                          reservation.release)
    return reservation


@task(name="export", cache_policy=NO_CACHE)
def export_task(trained: TrainResult, cal: CalibrationResult, ds: Dataset, schema: Schema, features: FeatureList,
                settings: Settings, release: str, lineage: dict, version: str) -> ExportedModel:
    exported = export_model(trained, cal, ds, schema, features, settings, release, lineage, version=version)
    get_run_logger().info("exported version %s (release %s) to %s; SavedModel fidelity %.1e, golden %.1e",
                          exported.version, release, exported.path, exported.fidelity_max_abs_diff,
                          exported.golden_max_abs_diff)
    return exported


@task(name="register", cache_policy=NO_CACHE)
def register_task(registry: MlflowRegistry, reservation: Reservation, exported: ExportedModel,
                  calibration: CalibrationResult, trained: TrainResult, input_example, params: dict,
                  extra_tags: dict[str, str]) -> RegisteredVersion:
    reg = registry.log_and_register(reservation, exported=exported, calibration=calibration, train=trained,
                                    input_example=input_example, params=params, extra_tags=extra_tags)
    get_run_logger().info("registered %s version %s (run %s)", reg.name, reg.version, reg.run_id)
    return reg


@task(name="hold-out-latest", cache_policy=NO_CACHE)
def holdout_task(ds: Dataset, schema: Schema, settings: Settings) -> HoldOut:
    held = hold_out_latest(ds, schema, settings.gate.holdout_fraction, settings.training.min_rows,
                           settings.training.min_class_rows, settings.gate.min_eval_rows)
    get_run_logger().info("held out %d of %d rows (%s at or after %s) for the comparison; training on %d rows until %s",
                          held.held_out.n_rows, ds.n_rows, held.time_column, held.cutoff, held.train.n_rows,
                          held.train_until)
    return held


@task(name="evaluate-on-rows", cache_policy=NO_CACHE)
def evaluate_task(candidate_dir: Path, ds: Dataset, rows: EvalRows, settings: Settings, champion_version: str | None,
                  champion_dir: Callable[[], Path] | None) -> Evaluation:
    result = evaluate_on_rows(candidate_dir, ds, rows, settings.gate, settings.seed, settings.calibration.n_bins,
                              champion_version, champion_dir)
    logger = get_run_logger()
    m = result.candidate
    logger.info("shipped candidate on %d rows (%s): roc_auc %.4f, pr_auc %.4f, brier %.4f, ece %.4f", rows.n_rows,
                rows.origin, m["roc_auc"], m["pr_auc"], m["brier"], m["ece"])
    if result.champion is not None:
        logger.info("champion version %s on the same rows: roc_auc %.4f (difference %+.4f, %d resamples)",
                    champion_version, result.champion["roc_auc"], result.difference["roc_auc"], result.resamples)
    elif result.champion_problem:
        logger.warning("champion version %s not scored: %s", champion_version, result.champion_problem)
    return result


@task(name="quality-gate", cache_policy=NO_CACHE)
def gate_task(candidate: dict[str, float], settings: GateSettings, champion_metrics: dict[str, float] | None,
              champion_version: str | None, evaluation: Evaluation | None = None) -> GateResult:
    result = evaluate_gate(candidate, settings, champion_metrics, champion_version, evaluation)
    logger = get_run_logger()
    against = f"champion version {champion_version}" if champion_version else "bounds only (no champion yet)"
    for note in result.notes:
        logger.warning("quality gate note: %s", note)
    if result.passed:
        logger.info("quality gate passed against %s", against)
    else:
        logger.warning("quality gate failed against %s:\n%s", against, "\n".join(f"  - {r}" for r in result.reasons))
    return result


@task(name="package", cache_policy=NO_CACHE)
def package_task(model_dir: Path, bundles_dir: Path) -> tuple[Bundle, ModelMetadata]:
    bundle, metadata = package_version(model_dir, bundles_dir)
    get_run_logger().info("bundle %s (%d files, sha256 %s…)", bundle.path, len(bundle.files), bundle.sha256[:12])
    return bundle, metadata


@task(name="deploy-target", cache_policy=NO_CACHE)
def deploy_task(target: Target, bundle: Bundle, metadata: ModelMetadata) -> Deployment:
    deployment = deploy_to(target, bundle, metadata)
    txn = get_transaction()
    if txn is not None:   # what the rollback hook needs to put this host back
        txn.set("target", target)
        txn.set("deployment", deployment)
    get_run_logger().info("target %s: %s version %s at %s; smoke passed (golden |Δp| %.1e, p50 %.2f ms)",
                          target.name, deployment.action, deployment.version, deployment.url,
                          deployment.smoke.golden_max_abs_diff, deployment.smoke.latency_ms_p50)
    return deployment


@deploy_task.on_rollback
def _undo_deploy(txn) -> None:
    """A later step of the run failed (another target, the promotion): put this host back, and keep what
    that did on the transaction for the flow's report (``restores``)."""
    target = txn.get("target", None)
    if target is None:   # this target's own deploy failed: deploy_to put it back itself (SmokeTestFailed.restore)
        return
    txn.set("restore", restore(target, txn.get("deployment")))


def restores(txn, error: BaseException) -> list[Restore]:
    """What was done to put each host of a failed deploy back: the rollback hooks' outcomes on the
    transaction's task transactions, and the failing target's own (a failed smoke test)."""
    found = [child.get("restore", None) for child in (txn.children if txn is not None else [])]
    own = getattr(error, "restore", None)
    return [r for r in [*found, own] if isinstance(r, Restore)]


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(registry: MlflowRegistry, version: str, reason: str, run_id: str | None,
                 approval: dict | None = None) -> dict:
    promotion = registry.promote(version, reason, run_id, approval)
    get_run_logger().info("champion: %s -> %s", promotion["champion_before"], promotion["champion_after"])
    return promotion


# ---------------------------------------------------------------- recalibration (flows/recalibrate.py)

@task(name="labelled-rows", cache_policy=NO_CACHE)
def labelled_rows_task(labels: str, source: LoadedModel, targets: list[Target]) -> LabelledRows:
    """A labels CSV scored by version N, or ``feedback``: the rows each target's server kept with their labels."""
    if labels == FEEDBACK:
        version = source.metadata.version
        answers = {t.name: transport_for(t).host("labelled", "--version", version) for t in targets}
        rows = labels_from_feedback(answers, version)
        truncated = [name for name, answer in answers.items() if answer.get("truncated")]
        if truncated:
            get_run_logger().warning("target(s) %s held more labelled rows than one read returns; the newest were "
                                     "taken", ", ".join(truncated))
    else:
        rows = labels_from_csv(labels, source.metadata, source)
    get_run_logger().info("%s: %d labelled rows, %d positive, sha256 %s…", rows.source, rows.n, int(rows.y.sum()),
                          rows.sha256[:12])
    return rows


@task(name="refit-calibrator", cache_policy=NO_CACHE)
def refit_task(rows: LabelledRows, split: Split, settings: Settings, source: LoadedModel) -> Recalibration:
    cal = refit(rows, split, settings)
    recal, _before, _after = measure(rows, split, cal, source, settings.calibration.n_bins)
    get_run_logger().info("refitted %s on %d rows (split %s); held out %d rows: ECE %.4f (version %s) -> %.4f, "
                          "brier %.4f -> %.4f", cal.method, split.fit.size, split.how, split.holdout.size,
                          recal.holdout_before["ece"], source.metadata.version, recal.holdout_after["ece"],
                          recal.holdout_before["brier"], recal.holdout_after["brier"])
    return recal


@task(name="reserve-patch", cache_policy=NO_CACHE)
def reserve_patch_task(registry: MlflowRegistry, settings: Settings, of_release: str,
                       feature_schema_hash: str) -> Reservation:
    """The next registry version with the next free PATCH of ``of_release``, under the model's release lock."""
    with exclusive(settings, "release", "reserving the next version"):
        reservation = registry.reserve(feature_schema_hash, lambda _prior, taken: next_patch(of_release, taken))
    get_run_logger().info("reserved %s version %s for release %s", reservation.name, reservation.version,
                          reservation.release)
    return reservation


@task(name="build-recalibrated", cache_policy=NO_CACHE)
def build_recalibrated_task(source: LoadedModel, recal: Recalibration, rows: LabelledRows, settings: Settings,
                            version: str, release: str, lineage: dict) -> ExportedModel:
    exported = build_recalibrated(source, recal, rows, settings, version, release, lineage)
    get_run_logger().info("exported version %s (release %s) to %s: version %s's SavedModel (|Δraw| %.1e), new "
                          "calibrator; golden %.1e", exported.version, release, exported.path,
                          source.metadata.version, exported.fidelity_max_abs_diff, exported.golden_max_abs_diff)
    return exported


@task(name="recalibration-gate", cache_policy=NO_CACHE)
def recalibration_gate_task(rows: LabelledRows, recal: Recalibration, source: LoadedModel,
                            settings: Settings) -> GateResult:
    raw, y = rows.raw[recal.split.holdout], rows.y[recal.split.holdout]
    result = judge(y, source.calibrator(raw), recal.calibration.calibrator(raw), settings, source.metadata.version)
    logger = get_run_logger()
    if result.passed:
        logger.info("recalibration gate passed against version %s on %d held-out rows", source.metadata.version,
                    y.size)
    else:
        logger.warning("recalibration gate failed:\n%s", "\n".join(f"  - {r}" for r in result.reasons))
    return result
