"""A recalibration: version N's network with a calibrator refitted on recent labelled rows (a PATCH release).

    refit    the configured calibration method on the fitted rows' raw scores, its metrics
             cross-fitted over ``recalibration.folds`` folds (``tasks.training.calibrate.calibrate``)
    judge    the recalibrated pair against version N's pair on the SAME held-out rows: Brier, ECE and
             ROC-AUC, each difference with its paired bootstrap interval; it passes when no difference
             is worse than N by more than ``recalibration.max_regression`` (every failing reason listed,
             with its interval). The rule reads the difference, not the interval's worse end: on a few
             hundred held-out rows that end reaches 0.03 ROC-AUC for a calibrator that changes nothing
             but ties (measured: [-0.036, +0.011] around -0.011 on 300 rows), so it would refuse
             most recalibrations an ECE alarm asks for
    build    ``models/<name>/<M>/``: N's saved_model/ copied byte for byte (same model digest), the new
             calibrator bound to it, metadata.json from N's with the new release, calibrator, metrics
             and prediction reference, ``recalibrated_from`` and the labels' source and SHA-256; checked
             through the serving loader and renamed into place as an export is (``tasks.training.export``)

The held-out metrics are the PATCH version's ``cv_metrics``: measured on rows neither calibrator was
fitted on, they describe the shipped pair, and the next release's gate compares against them.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from serving.contract.calibration import dump_calibrator
from serving.contract.metadata import (
    CALIBRATOR_FILE,
    METADATA_FILE,
    SAVED_MODEL_DIR,
    ModelMetadata,
    hash_tree,
    saved_model_digest,
)
from serving.contract.model import LoadedModel
from tasks.constants import HIGHER_IS_BETTER
from tasks.errors import TrainingError
from tasks.metrics import binary_metrics
from tasks.release.bootstrap import paired_bootstrap
from tasks.release.gate import GateResult
from tasks.release.labels import LabelledRows, Split
from tasks.settings import Settings
from tasks.training.calibrate import CalibrationResult, calibrate
from tasks.training.export import ExportedModel, prediction_reference, publish, record_golden, staging_for

log = logging.getLogger(__name__)

def refit(rows: LabelledRows, split: Split, settings: Settings) -> CalibrationResult:
    """The configured calibrator fitted on the fitted rows, its metrics cross-fitted over stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    raw, y = rows.raw[split.fit], rows.y[split.fit]
    folds = list(StratifiedKFold(n_splits=settings.recalibration.folds, shuffle=True,
                                 random_state=settings.seed).split(raw.reshape(-1, 1), y))
    return calibrate(raw, y, folds, settings.calibration.method, settings.calibration.n_bins)


def judge(y: np.ndarray, p_before: np.ndarray, p_after: np.ndarray, settings: Settings,
          against: str) -> GateResult:
    """The recalibrated pair (``p_after``) against version ``against``'s (``p_before``) on the same held-out rows.

    Passes when, for each metric of ``recalibration.max_regression``, the difference is not worse than version
    N's by more than the allowance; the paired interval goes with it (comparison, reasons). Every failing
    reason is listed.
    """
    rc = settings.recalibration
    reasons: list[str] = []
    comparison: dict[str, dict] = {}
    n_bins = settings.calibration.n_bins
    after, before = binary_metrics(y, p_after, n_bins), binary_metrics(y, p_before, n_bins)
    intervals, _draws = paired_bootstrap(y, p_after, p_before, rc.bootstrap, settings.seed, rc.confidence, n_bins)
    for name, allowed in rc.max_regression.items():
        diff = after[name] - before[name]
        low, high = intervals[name]
        lower_better = not HIGHER_IS_BETTER[name]
        worse_by = diff if lower_better else -diff
        comparison[name] = {"recalibrated": after[name], f"version_{against}": before[name],
                            "difference": diff, "interval": [low, high], "confidence": rc.confidence,
                            "worse_by": worse_by, "allowed": allowed}
        if worse_by > allowed + 1e-12:
            direction = "above" if lower_better else "below"
            reasons.append(f"{name} {after[name]:.4f} on {y.size} held-out rows is {worse_by:.4f} {direction} "
                           f"version {against}'s {before[name]:.4f} (allowed change {allowed:g}; "
                           f"{rc.confidence:.0%} interval of the difference [{low:+.4f}, {high:+.4f}]): collect "
                           f"more labels or keep version {against}")
    return GateResult(passed=not reasons, reasons=reasons, champion_version=None, comparison=comparison)


@dataclass(frozen=True)
class Recalibration:
    """What the recalibrated version is made of: the refit, the held-out scores and their metrics."""

    calibration: CalibrationResult
    split: Split
    holdout_before: dict[str, float]   # version N's pair on the held-out rows
    holdout_after: dict[str, float]    # the recalibrated pair on them


def measure(rows: LabelledRows, split: Split, cal: CalibrationResult, source: LoadedModel,
            n_bins: int) -> tuple[Recalibration, np.ndarray, np.ndarray]:
    """Both pairs' metrics on the held-out rows; returns them with the two pairs' held-out probabilities."""
    raw = rows.raw[split.holdout]
    before, after = source.calibrator(raw), cal.calibrator(raw)
    y = rows.y[split.holdout]
    return (Recalibration(cal, split, binary_metrics(y, before, n_bins), binary_metrics(y, after, n_bins)),
            before, after)


def build_recalibrated(source: LoadedModel, recal: Recalibration, rows: LabelledRows, settings: Settings,
                       version: str, release: str, lineage: dict) -> ExportedModel:
    """Write and verify ``models/<name>/<version>/``: ``source``'s SavedModel (identical bytes) with the refitted
    calibrator; returns where it is and what is in it.

    Raises:
        TrainingError: the copied SavedModel's digest or scores differ from version N's, the reloaded version
            misses its golden examples, or ``<version>/`` already exists (left as it is).
    """
    old: ModelMetadata = source.metadata
    cal = recal.calibration
    staging, final = staging_for(settings.models_dir, version)
    try:
        shutil.copytree(Path(source.version_dir) / SAVED_MODEL_DIR, staging / SAVED_MODEL_DIR)
        digest = saved_model_digest(hash_tree(staging))
        if digest != old.model_digest:
            raise TrainingError(f"recalibrate: the copy of version {old.version}'s SavedModel has digest "
                                f"{digest[:12]}…, its metadata.json says {old.model_digest[:12]}…")
        dump_calibrator(cal.calibrator.bound_to(digest), staging / CALIBRATOR_FILE)
        recalibration = {"recalibrated_from": old.version, "from_release": old.release,
                         "recalibrated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                         "labels": rows.source, "labels_sha256": rows.sha256, "labelled_rows": rows.n,
                         "split": recal.split.to_dict(rows), "holdout_metrics": {
                             f"version_{old.version}": recal.holdout_before, "recalibrated": recal.holdout_after}}
        reference = {**old.reference, "prediction": prediction_reference(cal.calibrator(rows.raw))}
        data = old.model_dump(mode="json", by_alias=True) | {
            "version": version, "release": release, "calibrator_method": cal.method,
            "cv_metrics": recal.holdout_after, "files": hash_tree(staging), "reference": reference,
            "calibration": {**cal.summary, "fitted_on": "labelled rows (cross-fitted metrics)",
                            "held_out": recal.holdout_after, f"held_out_version_{old.version}": recal.holdout_before},
            "lineage": {**old.lineage, **lineage, "labels": rows.source, "labels_sha256": rows.sha256},
            "recalibrated_from": old.version, "recalibration": recalibration}
        metadata = ModelMetadata.model_validate(data)
        (staging / METADATA_FILE).write_text(metadata.to_json())
        model = LoadedModel.load(staging)
        golden = [g.features for g in old.golden_examples]
        raw_now, _p = model.score_rows(golden)
        fidelity = float(np.max(np.abs(raw_now - np.asarray([g.raw_score for g in old.golden_examples]))))
        if fidelity > settings.export.fidelity_tolerance:
            raise TrainingError(f"recalibrate: the copied SavedModel scores version {old.version}'s golden rows "
                                f"{fidelity:.2e} away from it (tolerance {settings.export.fidelity_tolerance:.0e})")
        metadata, golden_error = record_golden(staging, metadata, model, golden)
        publish(staging, final)
        log.info("recalibrated version %s (release %s) into %s, release %s", old.version, old.release, final, release)
        return ExportedModel(version=version, release=release, path=final, metadata=metadata,
                             fidelity_max_abs_diff=fidelity, golden_max_abs_diff=golden_error)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
