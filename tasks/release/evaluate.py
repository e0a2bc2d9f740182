"""The shipped candidate and the champion scored on the same rows.

The rows: an evaluation file (``--eval-data``), or the most recent slice of the training data held out
from training (the schema's ``time_column``). Each side is what ships: the exported SavedModel
and calibrator as ``serving.contract.model.LoadedModel`` loads them, verified, so the candidate's figures here
describe exactly the pair a target will serve (the cross-validated metrics describe the fold models).
The champion's export comes from the registry (``tasks.registry.cache``, SHA-256 checked).

Two ways the champion may not be scored, told apart because the gate treats them apart:
its export could not be had or failed its checks (``champion_unavailable``: the gate fails closed), or
it needs a column the rows do not have (``champion_problem`` only: a contract change; the gate falls
back to the cross-validated comparison and says it is not like for like).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from serving.contract.errors import ServingError
from serving.contract.model import LoadedModel
from tasks.errors import ReleaseError
from tasks.metrics import binary_metrics
from tasks.release.bootstrap import BOOTSTRAP_METRICS, paired_bootstrap
from tasks.settings import GateSettings
from tasks.training.data import Dataset, HoldOut

SCORE_CHUNK = 65_536   # rows per call into the SavedModel


@dataclass(frozen=True)
class EvalRows:
    """Where the rows both models are scored on came from."""

    origin: Literal["eval-data", "time-holdout"]
    source: str
    n_rows: int
    positives: int
    detail: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def rows_of_file(ds: Dataset) -> EvalRows:
    return EvalRows("eval-data", ds.source, ds.n_rows, ds.positives, f"--eval-data {ds.source}")


def rows_of_holdout(holdout: HoldOut) -> EvalRows:
    held = holdout.held_out
    return EvalRows("time-holdout", held.source, held.n_rows, held.positives,
                    f"the most recent rows, held out from training: {holdout.time_column} at or after "
                    f"{holdout.cutoff} (training rows until {holdout.train_until})")


@dataclass(frozen=True)
class Evaluation:
    """The candidate's metrics on the rows and, when the champion was scored too, the paired differences
    (candidate − champion) with their bootstrap intervals."""

    rows: EvalRows
    candidate: dict[str, float]
    champion_version: str | None = None
    champion: dict[str, float] | None = None
    difference: dict[str, float] = field(default_factory=dict)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    resamples: int = 0
    confidence: float = 0.95
    champion_problem: str | None = None
    champion_unavailable: bool = False


def missing_inputs(model: LoadedModel, ds: Dataset) -> list[str]:
    """What the model needs that the rows do not have, or hold as another kind (text vs number)."""
    out = []
    for spec in model.metadata.inputs:
        values = ds.columns.get(spec.name)
        if values is None:
            out.append(f"it takes '{spec.name}', a column the evaluation rows do not have")
        elif (spec.dtype == "string") != (values.dtype == object):
            kind = "text" if spec.dtype == "string" else "a number"
            out.append(f"it takes '{spec.name}' as {kind}; the contract now types that column otherwise")
    return out


def shipped_scores(model: LoadedModel, ds: Dataset) -> np.ndarray:
    """Calibrated probabilities of the exported pair for every row of ``ds``, in chunks."""
    names = [spec.name for spec in model.metadata.inputs]
    out = np.empty(ds.n_rows, dtype=np.float64)
    for start in range(0, ds.n_rows, SCORE_CHUNK):
        part = slice(start, start + SCORE_CHUNK)
        out[part] = model.score_columns({n: ds.columns[n][part] for n in names})[1]
    return out


def evaluate_on_rows(candidate_dir: Path, ds: Dataset, rows: EvalRows, settings: GateSettings, seed: int,
                     n_bins: int = 10, champion_version: str | None = None,
                     champion_dir: Callable[[], Path] | None = None) -> Evaluation:
    """Score the exported candidate and, with ``champion_version``, the champion on ``ds``.

    Args:
        candidate_dir: the candidate's export directory.
        champion_dir: fetches the champion's export (from the registry); called only with a champion.
        seed: the bootstrap's seed (same rows, same seed → same intervals).
    """
    candidate = LoadedModel.load(candidate_dir)
    p_candidate = shipped_scores(candidate, ds)
    metrics = binary_metrics(ds.y, p_candidate, n_bins)
    base = Evaluation(rows=rows, candidate=metrics, champion_version=champion_version,
                      confidence=settings.confidence)
    if champion_version is None or champion_dir is None:
        return base
    try:
        champion = LoadedModel.load(champion_dir())
    except (ReleaseError, ServingError, OSError) as exc:
        return Evaluation(**{**base.__dict__, "champion_unavailable": True,
                             "champion_problem": f"its export could not be loaded: {exc}"})
    missing = missing_inputs(champion, ds)
    if missing:
        return Evaluation(**{**base.__dict__, "champion_problem": "it cannot score these rows: " + "; ".join(missing)})
    p_champion = shipped_scores(champion, ds)
    champion_metrics = binary_metrics(ds.y, p_champion, n_bins)
    intervals, drawn = paired_bootstrap(ds.y, p_candidate, p_champion, settings.bootstrap_resamples, seed,
                                        settings.confidence, n_bins)
    return Evaluation(**{**base.__dict__, "champion": champion_metrics, "resamples": drawn, "interval": intervals,
                         "difference": {m: metrics[m] - champion_metrics[m] for m in BOOTSTRAP_METRICS}})
