"""A small search over network sizes within a time budget, judged on rows the metrics never use.

Every candidate (the configured network first, then ``training.search.candidates`` in order) is fitted
on every cross-validation fold with the fold's own seed, exactly as the shipped fold models are: on the
fold's training rows, early-stopped on its inner validation split. Candidates are compared by their
mean inner-validation log-loss, paired by fold; the out-of-fold rows, which give the reported metrics
and fit the calibrator, play no part in the choice, so the metrics stay out of sample. The chosen
candidate's fold models are the ones that ship: nothing is refitted.

The configured network is kept unless a candidate's loss is lower by more than one standard error of
the paired per-fold differences (the 1-SE rule): on a few hundred rows, differences below that are
noise, and the configured network is the one a person chose.

The budget bounds the search's wall time: the configured network always runs, and a further candidate
starts only while the time spent so far plus the mean time of one candidate fits the budget. Which
candidates ran therefore depends on the machine's speed; the record names them, and ``budget_s: null``
runs them all (same seed, same choice).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tasks.progress import Progress
from tasks.settings import Settings

log = logging.getLogger(__name__)

Folds = list[tuple[np.ndarray, np.ndarray]]


class FoldFit(Protocol):
    """What the search reads of a fold's fit (``tasks.training.train.FoldFit``)."""

    fold: int
    val_loss: float       # best inner-validation log-loss
    val_auc: float


# Fits every fold with the given settings: (settings, folds, fold_done) -> one fit per fold, in any order;
# calls fold_done(fit) in this process as each fold's fit arrives.
RoundRunner = Callable[[Settings, Folds, "FoldsDone"], Sequence[FoldFit]]


class FoldsDone:
    """Counts the fold fits of every round of the search and reports each: ``fold 3/5 · candidate 2/6``.

    The total is every candidate's folds; a candidate the budget skips takes its folds off the total.
    """

    def __init__(self, progress: Progress, folds: int, candidates: int) -> None:
        self.progress, self.folds, self.candidates = progress, folds, candidates
        self.total = folds * candidates
        self.done = 0
        self.candidate = 0          # the round's candidate (0: the configured network)
        self.in_round = 0

    def begin(self) -> None:
        """Say what is to come before the first fit (the first one takes longest: TensorFlow loads)."""
        self.progress.step(f"fitting {self.folds} folds" + (f" × {self.candidates} candidates"
                                                            if self.candidates > 1 else ""), 0, self.total)

    def start(self, candidate: int) -> None:
        self.candidate, self.in_round = candidate, 0

    def skip(self) -> None:
        self.total -= self.folds

    def __call__(self, _fit: FoldFit) -> None:
        self.done += 1
        self.in_round += 1
        what = f"fold {self.in_round}/{self.folds}"
        if self.candidates > 1:
            what += f" · candidate {self.candidate + 1}/{self.candidates}"
        self.progress.step(what, self.done, self.total)


@dataclass
class CandidateRecord:
    """One candidate as tried (or not) in the search."""

    index: int                          # 0: the configured network; i: search.candidates[i - 1]
    changes: dict                       # what it changes in the configured training settings
    status: str = "skipped"             # chosen | tried | skipped (budget)
    val_loss: float | None = None       # mean over folds of the best inner-validation log-loss
    val_losses: list[float] = field(default_factory=list)
    val_auc: float | None = None        # mean over folds of the inner-validation ROC-AUC
    seconds: float | None = None        # wall time of its round (every fold)

    def to_dict(self) -> dict:
        return {"index": self.index, "changes": self.changes, "status": self.status,
                "val_loss": self.val_loss, "val_losses": self.val_losses, "val_auc": self.val_auc,
                "seconds": self.seconds}


@dataclass
class SearchOutcome:
    """The chosen settings, their fold fits, and the record of the search (None when it was off)."""

    settings: Settings
    fits: list[FoldFit]
    record: dict | None = None


def candidate_settings(settings: Settings, index: int) -> Settings:
    """``settings`` with candidate ``index`` (0: unchanged) applied, the search turned off."""
    training = settings.training
    chosen = training.model_copy(update={"search": training.search.model_copy(update={"enabled": False})}) \
        if index == 0 else training.candidate(index - 1)
    return settings.model_copy(update={"training": chosen})


def run_search(settings: Settings, folds: Folds, run_round: RoundRunner,
               progress: Progress | None = None) -> SearchOutcome:
    """Fit the configured network (and, when the search is on, the candidates within the budget) on
    every fold; return the chosen candidate's settings and fold fits with the record.

    Args:
        progress: where each fold's fit is reported; None: ``Progress()`` (the sink around the call, if any).
    """
    search = settings.training.search
    base = candidate_settings(settings, 0)
    searching = search.enabled and bool(search.candidates)
    fold_done = FoldsDone(progress or Progress(), len(folds), 1 + len(search.candidates) if searching else 1)
    fold_done.begin()
    if not searching:
        return SearchOutcome(base, list(run_round(base, folds, fold_done)))
    started = time.perf_counter()
    records = [CandidateRecord(0, {})] + [CandidateRecord(i + 1, dict(c)) for i, c in enumerate(search.candidates)]
    fits: dict[int, list[FoldFit]] = {}
    for record in records:
        spent = time.perf_counter() - started
        if fits and search.budget_s is not None and spent + spent / len(fits) > search.budget_s:
            log.info("search: candidate %d skipped, %.0fs spent of the %.0fs budget", record.index, spent,
                     search.budget_s)
            fold_done.skip()
            continue
        t0 = time.perf_counter()
        fold_done.start(record.index)
        round_fits = sorted(run_round(candidate_settings(settings, record.index), folds, fold_done),
                            key=lambda f: f.fold)
        fits[record.index] = round_fits
        record.status = "tried"
        record.seconds = round(time.perf_counter() - t0, 2)
        record.val_losses = [round(float(f.val_loss), 6) for f in round_fits]
        record.val_loss = round(float(np.mean(record.val_losses)), 6)
        record.val_auc = round(float(np.mean([f.val_auc for f in round_fits])), 6)
        log.info("search: candidate %d %s: inner-validation log-loss %.4f, ROC-AUC %.4f, %.1fs", record.index,
                 record.changes or "(configured)", record.val_loss, record.val_auc, record.seconds)
    chosen, reason = choose(records)
    chosen.status = "chosen"
    record = {"budget_s": search.budget_s, "seconds": round(time.perf_counter() - started, 2),
              "chosen": chosen.index, "reason": reason, "selected_on": "inner-validation log-loss, paired by fold",
              "candidates": [r.to_dict() for r in records]}
    log.info("search: candidate %d chosen (%s)", chosen.index, reason)
    return SearchOutcome(candidate_settings(settings, chosen.index), fits[chosen.index], record)


def choose(records: list[CandidateRecord]) -> tuple[CandidateRecord, str]:
    """The configured network (records[0]) unless the tried candidate with the lowest mean loss beats it by
    more than one standard error of their paired per-fold differences."""
    base = records[0]
    tried = [r for r in records if r.val_loss is not None]
    best = min(tried, key=lambda r: (r.val_loss, r.index))
    if best is base:
        return base, "the configured network has the lowest inner-validation log-loss"
    diffs = np.asarray(base.val_losses) - np.asarray(best.val_losses)
    se = float(np.std(diffs, ddof=1) / math.sqrt(diffs.size)) if diffs.size > 1 else math.inf
    gain = float(diffs.mean())
    if gain > se:
        return best, f"log-loss {gain:.4f} lower than the configured network's (one standard error: {se:.4f})"
    return base, (f"candidate {best.index} is lower by {gain:.4f}, within one standard error ({se:.4f}): "
                  "the configured network is kept")
