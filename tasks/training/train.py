"""Stage 1: train the TabularANN with stratified K-fold cross-validation; the fold models are what ships.

Preprocessing (imputation, normalisation, categorical lookup) is built into the
Keras graph from statistics of the rows each model is fitted on, so the exported
SavedModel takes raw named features and no fold sees another fold's statistics.
The fold models whose out-of-fold scores give the metrics and the calibrator are fused
into one ensemble model (the mean of their probabilities): what is evaluated is what ships.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from serving.contract.inputs import MISSING_CATEGORY
from serving.contract.schema import FeatureList, FeatureSpec, Schema, tensor_name
from tasks.constants import MODEL_TYPE
from tasks.metrics import binary_metrics
from tasks.progress import Progress
from tasks.settings import Settings, TrainingSettings
from tasks.training.data import Dataset
from tasks.training.network import FeatureStats
from tasks.training.search import FoldsDone, SearchOutcome, run_search

log = logging.getLogger(__name__)

MISSING_TOKEN = "__missing__"


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    epochs_run: int
    seconds: float
    metrics: dict[str, float]
    where: str = ""           # host:pid that fitted it


@dataclass
class TrainResult:
    """What training hands to calibration and export. ``model`` is the fold models' ensemble (one Keras
    model, the mean of their probabilities); ``member_stats`` each fold model's preprocessing constants."""

    model: object
    oof_raw: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    fold_results: list[FoldResult]
    member_stats: list[list[FeatureStats]]
    params: dict
    fold_models: list = field(default_factory=list)   # the members, unfused: fold k's gave oof_raw[va_k]
    timings: dict[str, float] = field(default_factory=dict)
    # (rows fitted x epochs) / fit wall time, over every fit; includes model building and validation passes.
    training_rows_per_second: float = 0.0
    model_type: str = MODEL_TYPE
    search: dict | None = None   # the search over network sizes (tasks.training.search), None when it was off

    @property
    def stats(self) -> list[FeatureStats]:
        """The inputs' names and kinds (the same for every member; the constants differ)."""
        return self.member_stats[0]

    @property
    def ensemble_members(self) -> int:
        return len(self.member_stats)


_configured: dict[str, object] = {}


def configure_tensorflow(intra: int, inter: int) -> None:
    """Set TF thread pools and determinism once per process (TF refuses changes after start)."""
    import tensorflow as tf

    # Each fold is a new model, so Keras' retracing warnings are expected noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if _configured:
        if _configured.get("threads") != (intra, inter):
            log.warning("TensorFlow already runs with threads %s; ignoring %s", _configured["threads"], (intra, inter))
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        log.warning("TensorFlow was initialised before the thread settings could apply")
    tf.config.experimental.enable_op_determinism()
    _configured["threads"] = (intra, inter)


def feature_stats(features: FeatureList, schema: Schema, columns: dict[str, np.ndarray],
                  rows: np.ndarray) -> list[FeatureStats]:
    """Imputation values and normalisation constants from the given rows only."""
    out = []
    for f in features.features:
        spec = schema.column(f.name)
        values = columns[f.name][rows]
        if spec.type == "categorical":
            out.append(_categorical_stats(f, spec.categories, values))
            continue
        present = values[~np.isnan(values)]
        if f.imputation == "median":
            fill = float(np.median(present)) if present.size else 0.0
        elif f.imputation == "mean":
            fill = float(np.mean(present)) if present.size else 0.0
        elif f.imputation == "most_frequent":
            fill = float(np.mean(present) >= 0.5) if present.size else 0.0
        else:
            fill = 0.0
        if f.preprocessing == "binary":
            out.append(FeatureStats(f.name, "numeric", fill=fill))
            continue
        log_it = f.preprocessing == "log_standardize"
        filled = np.where(np.isnan(values), fill, values)
        transformed = np.log1p(np.maximum(filled, 0.0)) if log_it else filled
        std = float(transformed.std())
        out.append(FeatureStats(f.name, "numeric", fill=fill, mean=float(transformed.mean()),
                                std=std if std > 1e-12 else 1.0, log=log_it))
    return out


def _categorical_stats(f: FeatureSpec, categories: tuple[str, ...], values: np.ndarray) -> FeatureStats:
    vocabulary = tuple(categories)
    fill: str = MISSING_CATEGORY
    if f.imputation == "missing_category":
        vocabulary += (MISSING_TOKEN,)
        fill = MISSING_TOKEN
    elif f.imputation == "most_frequent":
        present = values[values != MISSING_CATEGORY]
        cats, counts = np.unique(present.astype(str), return_counts=True) if present.size else ([categories[0]], [1])
        fill = str(cats[int(np.argmax(counts))])
    dim = f.embedding_dim or min(16, math.ceil(1.6 * (len(vocabulary) + 1) ** 0.56))
    return FeatureStats(f.name, "categorical", fill=fill, vocabulary=vocabulary,
                        embedding_dim=dim if f.preprocessing == "embedding" else None)


def model_inputs(columns: dict[str, np.ndarray], stats: list[FeatureStats], rows: np.ndarray | None = None) -> dict:
    sel = (lambda a: a) if rows is None else (lambda a: a[rows])
    return {tensor_name(s.name): sel(columns[s.name]).astype(object if s.kind == "categorical" else np.float64)
            for s in stats}


def _callbacks(cfg: TrainingSettings) -> list:
    import keras

    out = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                         restore_best_weights=True)]
    if cfg.lr_schedule == "plateau":
        # Halve the rate when validation loss stalls, well before early stopping gives up.
        out.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, min_lr=1e-5,
                                                     patience=max(1, cfg.early_stopping_patience // 2)))
    return out


def _optimizer(cfg: TrainingSettings, steps_per_epoch: int):
    import keras

    rate = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.epochs * steps_per_epoch,
                                                      alpha=0.01)
    return keras.optimizers.Adam(rate)


def _fit(ds: Dataset, features: FeatureList, schema: Schema, rows: np.ndarray, cfg: TrainingSettings, seed: int):
    """Fit one model on ``rows``, early-stopped on a stratified inner split of them.

    Returns the model (best epoch's weights restored), its preprocessing constants, the best epoch, epochs run,
    rows fitted, the best inner-validation loss and the inner-validation rows.
    """
    import keras
    from sklearn.model_selection import train_test_split

    from tasks.training.network import build_model

    fit_rows, val_rows = train_test_split(rows, test_size=cfg.validation_fraction, random_state=seed,
                                          stratify=ds.y[rows])
    fit_rows = np.sort(fit_rows)
    keras.utils.set_random_seed(seed)
    stats = feature_stats(features, schema, ds.columns, fit_rows)
    model = build_model([stats], cfg, seed)
    model.compile(optimizer=_optimizer(cfg, math.ceil(fit_rows.size / cfg.batch_size)), loss="binary_crossentropy")
    x, y = model_inputs(ds.columns, stats, fit_rows), ds.y[fit_rows].astype("float32")
    history = model.fit(x, y, validation_data=(model_inputs(ds.columns, stats, val_rows),
                                               ds.y[val_rows].astype("float32")),
                        epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=_callbacks(cfg), verbose=0,
                        shuffle=True)
    losses = history.history["val_loss"]
    return model, stats, int(np.argmin(losses)) + 1, len(losses), fit_rows.size, float(np.min(losses)), val_rows


def predict_raw(model, columns: dict[str, np.ndarray], stats: list[FeatureStats],
                rows: np.ndarray | None = None) -> np.ndarray:
    return np.asarray(model.predict(model_inputs(columns, stats, rows), batch_size=4096, verbose=0),
                      dtype=np.float64).reshape(-1)


@dataclass
class FoldFit:
    """One fold's fitted model as plain data: it crosses process boundaries (Dask workers) and is
    rebuilt into a Keras model by ``assemble``."""

    fold: int
    seed: int
    weights: list[np.ndarray]
    stats: list[FeatureStats]
    oof: np.ndarray           # raw scores of the fold's held-out rows
    best_epoch: int
    epochs_run: int
    rows_fitted: int
    seconds: float
    where: str = ""           # host:pid of the process that fitted it
    val_loss: float = math.nan    # best inner-validation log-loss (the search compares candidates by it)
    val_auc: float = math.nan     # inner-validation ROC-AUC at that epoch


# Runs the folds (and the search over network sizes, tasks.training.search): given the settings and the
# folds, returns the chosen settings and their fold fits. ``train`` runs them one after another here;
# ``flows.training`` runs each candidate's folds as parallel Prefect tasks on a Dask cluster.
FoldRunner = Callable[[Settings, list[tuple[np.ndarray, np.ndarray]]], SearchOutcome]


def cv_splits(ds: Dataset, settings: Settings) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified folds: (training rows, held-out rows), sorted, fixed by the seed."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=settings.training.cv_folds, shuffle=True, random_state=settings.seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(ds.n_rows), ds.y)]


def fit_fold(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings, fold: int, rows: np.ndarray,
             held_out: np.ndarray, threads: tuple[int, int] | None = None) -> FoldFit:
    """Fit fold ``fold`` on ``rows`` and score ``held_out``. The same seed gives the same weights in any
    process and with any thread count (TensorFlow's op determinism is on).

    Args:
        threads: TensorFlow's (intra-op, inter-op) threads for this process; None: ``settings.threads()``.
    """
    configure_tensorflow(*(threads or settings.threads()))
    seed = settings.seed + fold + 1
    t0 = time.perf_counter()
    model, stats, best, ran, n_fit, val_loss, val_rows = _fit(ds, features, schema, rows, settings.training, seed)
    oof = predict_raw(model, ds.columns, stats, held_out)
    # After the held-out rows: the first predict() traces the graph for their batch shape, exactly as a
    # rebuilt fold model's first predict() does, so the two agree bit for bit.
    val_auc = float(binary_metrics(ds.y[val_rows], predict_raw(model, ds.columns, stats, val_rows))["roc_auc"])
    return FoldFit(fold=fold, seed=seed, weights=[np.asarray(w) for w in model.get_weights()], stats=stats, oof=oof,
                   best_epoch=best, epochs_run=ran, rows_fitted=n_fit, seconds=time.perf_counter() - t0,
                   where=f"{socket.gethostname()}:{os.getpid()}", val_loss=val_loss, val_auc=val_auc)


def train(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings,
          run_folds: FoldRunner | None = None, progress: Progress | None = None) -> TrainResult:
    """Cross-validate (out-of-fold predictions for metrics and calibration), after a search over network
    sizes when ``training.search`` is on; the chosen network's fold models, fused into one ensemble, are
    the model that ships.

    Args:
        run_folds: fits the folds (and the search) elsewhere, in parallel; None: one after another here.
        progress: where each fold's fit is reported (one after another here); None: ``Progress()``.
    """
    folds = cv_splits(ds, settings)
    t_cv = time.perf_counter()
    if run_folds is None:
        def run_round(candidate: Settings, folds: list[tuple[np.ndarray, np.ndarray]],
                      fold_done: FoldsDone) -> list[FoldFit]:
            fits = []
            for k, (tr, va) in enumerate(folds):
                fits.append(fit_fold(ds, schema, features, candidate, k, tr, va))
                fold_done(fits[-1])
            return fits

        outcome = run_search(settings, folds, run_round, progress)
    else:
        outcome = run_folds(settings, folds)
    return assemble(ds, features, outcome, folds, time.perf_counter() - t_cv)


def assemble(ds: Dataset, features: FeatureList, outcome: SearchOutcome, folds: list[tuple[np.ndarray, np.ndarray]],
             cv_seconds: float) -> TrainResult:
    """The chosen fold fits rebuilt into Keras models and fused into the ensemble; out-of-fold scores and metrics."""
    from tasks.training.network import build_model, fuse

    settings, fits = outcome.settings, outcome.fits
    cfg = settings.training
    configure_tensorflow(*settings.threads())
    fits = sorted(fits, key=lambda f: f.fold)
    if [f.fold for f in fits] != list(range(len(folds))):
        raise ValueError(f"fold fits {[f.fold for f in fits]} do not cover the {len(folds)} folds")
    oof = np.full(ds.n_rows, np.nan)
    fold_results: list[FoldResult] = []
    models = []
    for fit, (_tr, va) in zip(fits, folds):
        model = build_model([fit.stats], cfg, fit.seed)
        model.set_weights(fit.weights)
        models.append(model)
        oof[va] = fit.oof
        fold_results.append(FoldResult(fit.fold, fit.best_epoch, fit.epochs_run, round(fit.seconds, 3),
                                       binary_metrics(ds.y[va], fit.oof), fit.where))
        log.info("fold %d/%d: best epoch %d of %d, roc_auc %.4f, %.1fs", fit.fold + 1, len(folds), fit.best_epoch,
                 fit.epochs_run, fold_results[-1].metrics["roc_auc"], fit.seconds)
    rows_seen = sum(f.rows_fitted * f.epochs_run for f in fits)
    fit_seconds = sum(f.seconds for f in fits)
    member_stats = [f.stats for f in fits]
    # No separate final fit: the models whose out-of-fold scores gave the metrics and the calibrator
    # are the ones that ship, averaged, each with its own preprocessing constants.
    t0 = time.perf_counter()
    ensemble = fuse(models, member_stats, cfg, settings.seed)
    ensemble_seconds = time.perf_counter() - t0
    params = {**cfg.model_dump(mode="json", exclude={"parallel", "search"}), "seed": settings.seed,
              "model_type": MODEL_TYPE, "features": features.names, "ensemble_members": len(models)}
    return TrainResult(
        model=ensemble, oof_raw=oof, folds=folds, fold_results=fold_results, member_stats=member_stats,
        params=params, fold_models=models, search=outcome.record,
        timings={"cv_seconds": round(cv_seconds, 3), "ensemble_seconds": round(ensemble_seconds, 3),
                 **({"search_seconds": outcome.record["seconds"]} if outcome.record else {})},
        training_rows_per_second=round(rows_seen / fit_seconds, 1) if fit_seconds else 0.0,
    )
