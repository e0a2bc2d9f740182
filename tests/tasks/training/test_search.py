"""The search over network sizes: what it fits, how it chooses, how the budget stops it (a stand-in for the
fold fits; the real fits are in test_model.py and tests/flows/test_parallel_training.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tasks.errors import ConfigError
from tasks.progress import Progress
from tasks.settings import load_settings
from tasks.training import search as search_module
from tasks.training.search import run_search

pytestmark = pytest.mark.unit

FOLDS = [(np.arange(0, 8), np.arange(8, 10)), (np.arange(2, 10), np.arange(0, 2)), (np.arange(0, 6), np.arange(6, 10))]


@dataclass
class Fit:
    fold: int
    val_loss: float
    val_auc: float
    oof_auc: float          # what the held-out rows would say: the search must never look at it


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _settings(tmp_path, candidates, budget=None, enabled=True):
    config = tmp_path / "pipeline.yaml"
    config.write_text("model_name: m\n")
    return load_settings(config, env={"PIPELINE_HOME": str(tmp_path / "home")},
                         overrides={"training.search": {"enabled": enabled, "budget_s": budget,
                                                        "candidates": candidates}})


def _runner(losses: dict[tuple, list[float]], clock: Clock | None = None, seconds: float = 10.0):
    """Per network (hidden_units, dropout) the folds' inner-validation losses; records each round's settings."""
    seen = []

    def run_round(settings, folds, fold_done):
        cfg = settings.training
        seen.append(cfg)
        if clock is not None:
            clock.now += seconds
        per_fold = losses[(cfg.hidden_units, cfg.dropout)]
        # Out-of-fold figures run the opposite way to the inner-validation ones: a choice made on them differs.
        fits = [Fit(k, loss, 1 - loss, oof_auc=loss) for k, loss in reversed(list(enumerate(per_fold)))]
        for fit in fits:     # in the order they finish (last fold first), as parallel folds may
            fold_done(fit)
        return fits

    return run_round, seen


def test_off_fits_only_the_configured_network(tmp_path):
    settings = _settings(tmp_path, [{"hidden_units": [8]}], enabled=False)
    run_round, seen = _runner({((64, 32), 0.1): [0.5, 0.5, 0.5]})
    outcome = run_search(settings, FOLDS, run_round)
    assert [cfg.hidden_units for cfg in seen] == [(64, 32)]
    assert outcome.record is None and outcome.settings.training.hidden_units == (64, 32)


def test_a_candidate_clearly_better_on_inner_validation_is_chosen_with_its_fold_fits(tmp_path):
    settings = _settings(tmp_path, [{"hidden_units": [8]}, {"hidden_units": [128], "dropout": 0.3}])
    run_round, seen = _runner({((64, 32), 0.1): [0.50, 0.52, 0.49], ((8,), 0.1): [0.60, 0.61, 0.62],
                               ((128,), 0.3): [0.40, 0.43, 0.41]})
    outcome = run_search(settings, FOLDS, run_round)
    assert [(cfg.hidden_units, cfg.dropout) for cfg in seen] == [((64, 32), 0.1), ((8,), 0.1), ((128,), 0.3)]
    assert all(not cfg.search.enabled for cfg in seen)
    assert outcome.settings.training.hidden_units == (128,) and outcome.settings.training.dropout == 0.3
    assert outcome.settings.training.search.enabled is False
    assert [f.fold for f in outcome.fits] == [0, 1, 2] and [f.val_loss for f in outcome.fits] == [0.40, 0.43, 0.41]
    record = outcome.record
    assert record["chosen"] == 2 and "lower than the configured network" in record["reason"]
    assert [c["status"] for c in record["candidates"]] == ["tried", "tried", "chosen"]
    assert record["candidates"][2]["changes"] == {"hidden_units": [128], "dropout": 0.3}
    assert record["candidates"][0]["val_loss"] == pytest.approx(np.mean([0.50, 0.52, 0.49]))


def test_a_gain_within_one_standard_error_keeps_the_configured_network(tmp_path):
    settings = _settings(tmp_path, [{"hidden_units": [8]}])
    # Lower on average (by 0.003) but not on every fold: the paired differences' standard error is larger.
    run_round, _ = _runner({((64, 32), 0.1): [0.50, 0.52, 0.49], ((8,), 0.1): [0.51, 0.50, 0.491]})
    outcome = run_search(settings, FOLDS, run_round)
    assert outcome.settings.training.hidden_units == (64, 32)
    assert outcome.record["chosen"] == 0 and "within one standard error" in outcome.record["reason"]
    assert [c["status"] for c in outcome.record["candidates"]] == ["chosen", "tried"]


def test_the_budget_stops_the_search_before_a_candidate_that_would_not_fit(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(search_module.time, "perf_counter", clock)
    settings = _settings(tmp_path, [{"hidden_units": [8]}, {"hidden_units": [16]}, {"hidden_units": [32]}],
                         budget=25)
    run_round, seen = _runner({((64, 32), 0.1): [0.5] * 3, ((8,), 0.1): [0.3, 0.31, 0.29],
                               ((16,), 0.1): [0.1] * 3, ((32,), 0.1): [0.1] * 3}, clock, seconds=10)
    outcome = run_search(settings, FOLDS, run_round)
    # 10 s spent after the configured network: one more (10 s) fits in 25; after 20 s a third would not.
    assert [cfg.hidden_units for cfg in seen] == [(64, 32), (8,)]
    assert [c["status"] for c in outcome.record["candidates"]] == ["tried", "chosen", "skipped", "skipped"]
    assert outcome.record["seconds"] == 20 and outcome.record["budget_s"] == 25


def test_the_configured_network_runs_even_when_it_alone_exceeds_the_budget(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(search_module.time, "perf_counter", clock)
    settings = _settings(tmp_path, [{"hidden_units": [8]}], budget=5)
    run_round, seen = _runner({((64, 32), 0.1): [0.5] * 3, ((8,), 0.1): [0.1] * 3}, clock, seconds=10)
    outcome = run_search(settings, FOLDS, run_round)
    assert len(seen) == 1 and outcome.record["chosen"] == 0
    assert [c["status"] for c in outcome.record["candidates"]] == ["chosen", "skipped"]


@pytest.mark.parametrize(("candidate", "message"), [
    ({"cv_folds": 3}, "candidates[0]: cv_folds cannot be searched"),
    ({"validation_fraction": 0.3}, "validation_fraction cannot be searched"),
    ({"dropout": 1.5}, "search.candidates[0]: dropout: Input should be less than 1"),
    ({}, "candidates[0] changes nothing"),
])
def test_a_candidate_that_cannot_be_searched_is_refused_naming_it(tmp_path, candidate, message):
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: training") as err:
        _settings(tmp_path, [candidate])
    assert message in str(err.value)


def test_the_shipped_config_searches_within_a_budget():
    settings = load_settings(env={})
    search = settings.training.search
    assert search.enabled and search.budget_s and len(search.candidates) >= 3
    for i in range(len(search.candidates)):
        settings.training.candidate(i)      # every candidate is valid


def _recorded(settings, run_round):
    steps = []
    outcome = run_search(settings, FOLDS, run_round, Progress(steps.append))
    return outcome, [(s.what, s.done, s.total) for s in steps]


def test_each_fold_of_each_candidate_is_reported_in_order_with_the_totals(tmp_path):
    settings = _settings(tmp_path, [{"hidden_units": [8]}])
    run_round, _ = _runner({((64, 32), 0.1): [0.5] * 3, ((8,), 0.1): [0.4] * 3})
    _outcome, steps = _recorded(settings, run_round)
    assert steps == [("fitting 3 folds × 2 candidates", 0, 6), ("fold 1/3 · candidate 1/2", 1, 6),
                     ("fold 2/3 · candidate 1/2", 2, 6), ("fold 3/3 · candidate 1/2", 3, 6),
                     ("fold 1/3 · candidate 2/2", 4, 6), ("fold 2/3 · candidate 2/2", 5, 6),
                     ("fold 3/3 · candidate 2/2", 6, 6)]


def test_without_a_search_the_folds_are_reported_alone(tmp_path):
    settings = _settings(tmp_path, [{"hidden_units": [8]}], enabled=False)
    run_round, _ = _runner({((64, 32), 0.1): [0.5] * 3})
    _outcome, steps = _recorded(settings, run_round)
    assert steps == [("fitting 3 folds", 0, 3), ("fold 1/3", 1, 3), ("fold 2/3", 2, 3), ("fold 3/3", 3, 3)]


def test_a_candidate_the_budget_skips_is_never_reported(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(search_module.time, "perf_counter", clock)
    settings = _settings(tmp_path, [{"hidden_units": [8]}, {"hidden_units": [4]}], budget=15)
    run_round, _ = _runner({((64, 32), 0.1): [0.5] * 3, ((8,), 0.1): [0.4] * 3}, clock, seconds=10)
    _outcome, steps = _recorded(settings, run_round)
    # Only the configured network runs (10 s spent + 10 s for the next > 15 s): 3 folds of the 9 announced.
    assert steps == [("fitting 3 folds × 3 candidates", 0, 9), ("fold 1/3 · candidate 1/3", 1, 9),
                     ("fold 2/3 · candidate 1/3", 2, 9), ("fold 3/3 · candidate 1/3", 3, 9)]
