"""Stage 1: train the TabularANN with stratified K-fold cross-validation, then a final fit.

Preprocessing (imputation, normalisation, categorical lookup) is built into the
Keras graph from statistics of the rows each model is fitted on, so the exported
SavedModel takes raw named features and no fold sees another fold's statistics.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from serving.inputs import MISSING_CATEGORY
from serving.schema import FeatureList, FeatureSpec, Schema, tensor_name
from tasks.constants import MODEL_TYPE
from tasks.metrics import binary_metrics
from tasks.settings import Settings, TrainingSettings
from tasks.training.data import Dataset

log = logging.getLogger(__name__)

MISSING_TOKEN = "__missing__"


@dataclass(frozen=True)
class FeatureStats:
    """Constants baked into the graph for one feature."""

    name: str
    kind: str                      # numeric | categorical
    fill: float | str = 0.0
    mean: float = 0.0
    std: float = 1.0
    log: bool = False
    vocabulary: tuple[str, ...] = ()
    embedding_dim: int | None = None


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    epochs_run: int
    seconds: float
    metrics: dict[str, float]


@dataclass
class TrainResult:
    """What training hands to calibration and export. ``model`` is the final Keras model."""

    model: object
    oof_raw: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    fold_results: list[FoldResult]
    final_epochs: int             # the median best epoch of the folds
    stats: list[FeatureStats]
    params: dict
    timings: dict[str, float] = field(default_factory=dict)
    # (rows fitted x epochs) / fit wall time, over every fit; includes model building and validation passes.
    training_rows_per_second: float = 0.0
    model_type: str = MODEL_TYPE


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


def build_model(stats: list[FeatureStats], cfg: TrainingSettings, seed: int):
    """The TabularANN: per-feature preprocessing layers, then a small regularised MLP."""
    import keras
    import tensorflow as tf
    from keras import layers

    class NumericPreprocess(layers.Layer):
        def __init__(self, fill, mean, std, log, **kwargs):
            super().__init__(autocast=False, **kwargs)
            self.fill, self.mean, self.std, self.log = fill, mean, std, log

        def call(self, x):
            # Keras hands float64 arrays to fit() as float32, while the SavedModel takes float64:
            # casting first makes training and serving compute on exactly the same numbers.
            x = tf.cast(x, tf.float32)
            x = tf.where(tf.math.is_nan(x), tf.constant(self.fill, tf.float32), x)
            if self.log:
                x = tf.math.log1p(tf.maximum(x, 0.0))
            return tf.expand_dims((x - self.mean) / self.std, -1)

    class StringFill(layers.Layer):
        def __init__(self, fill, **kwargs):
            super().__init__(**kwargs)
            self.fill = fill

        def call(self, x):
            x = tf.strings.strip(x)
            return tf.where(tf.equal(x, MISSING_CATEGORY), tf.constant(self.fill), x)

    # Every random layer gets its own explicit seed: unseeded Keras layers draw from the process-wide
    # `random` module, which other threads (Prefect's) advance at any time, so a fold could differ.
    seeds = iter(range(seed * 1_000, seed * 1_000 + 1_000))
    inputs, parts = {}, []
    for s in stats:
        name = tensor_name(s.name)
        if s.kind == "numeric":
            inp = keras.Input(shape=(), dtype="float64", name=name)
            parts.append(NumericPreprocess(s.fill, s.mean, s.std, s.log, name=f"pre_{name}")(inp))
        else:
            inp = keras.Input(shape=(), dtype="string", name=name)
            filled = StringFill(s.fill, name=f"fill_{name}")(inp)
            if s.embedding_dim:
                idx = layers.StringLookup(vocabulary=list(s.vocabulary), num_oov_indices=1,
                                          output_mode="int", name=f"lookup_{name}")(filled)
                emb = layers.Embedding(len(s.vocabulary) + 1, s.embedding_dim, name=f"emb_{name}",
                                       embeddings_initializer=keras.initializers.RandomUniform(
                                           -0.05, 0.05, seed=next(seeds)))(idx)
                parts.append(emb)
            else:
                parts.append(layers.StringLookup(vocabulary=list(s.vocabulary), num_oov_indices=1,
                                                 output_mode="one_hot", name=f"onehot_{name}")(filled))
        inputs[name] = inp
    x = layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    for i, units in enumerate(cfg.hidden_units):
        x = layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"dense_{i}",
                         kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{i}", seed=next(seeds))(x)
    out = layers.Dense(1, activation="sigmoid", name="score",
                       kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
    out = layers.Reshape((), name="probability")(out)
    model = keras.Model(inputs, out, name=MODEL_TYPE)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy")
    return model


def _fit(ds: Dataset, features: FeatureList, schema: Schema, rows: np.ndarray, cfg: TrainingSettings,
         seed: int, epochs: int | None = None):
    """Fit one model on ``rows``.

    With ``epochs`` None: early stopping on a stratified inner split (the cross-validation
    fits). With a number: exactly that many epochs on every row (the final fit).
    Returns the model, its preprocessing constants, the best epoch, epochs run and rows fitted.
    """
    import keras
    from sklearn.model_selection import train_test_split

    val_rows = None
    fit_rows = rows
    if epochs is None:
        fit_rows, val_rows = train_test_split(rows, test_size=cfg.validation_fraction, random_state=seed,
                                              stratify=ds.y[rows])
        fit_rows = np.sort(fit_rows)
    keras.utils.set_random_seed(seed)
    stats = feature_stats(features, schema, ds.columns, fit_rows)
    model = build_model(stats, cfg, seed)
    x, y = model_inputs(ds.columns, stats, fit_rows), ds.y[fit_rows].astype("float32")
    if epochs is not None:
        model.fit(x, y, epochs=epochs, batch_size=cfg.batch_size, verbose=0, shuffle=True)
        return model, stats, epochs, epochs, fit_rows.size
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                         restore_best_weights=True)
    history = model.fit(x, y, validation_data=(model_inputs(ds.columns, stats, val_rows),
                                               ds.y[val_rows].astype("float32")),
                        epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=[stop], verbose=0, shuffle=True)
    losses = history.history["val_loss"]
    return model, stats, int(np.argmin(losses)) + 1, len(losses), fit_rows.size


def predict_raw(model, columns: dict[str, np.ndarray], stats: list[FeatureStats],
                rows: np.ndarray | None = None) -> np.ndarray:
    return np.asarray(model.predict(model_inputs(columns, stats, rows), batch_size=4096, verbose=0),
                      dtype=np.float64).reshape(-1)


def train(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings) -> TrainResult:
    """Cross-validate (out-of-fold predictions for metrics and calibration), then fit the final model
    on all rows for the median of the folds' early-stopped epoch counts."""
    from sklearn.model_selection import StratifiedKFold

    cfg = settings.training
    configure_tensorflow(*settings.threads())
    splitter = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=settings.seed)
    folds = [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(ds.n_rows), ds.y)]
    oof = np.full(ds.n_rows, np.nan)
    fold_results: list[FoldResult] = []
    rows_seen, fit_seconds = 0, 0.0
    t_cv = time.perf_counter()
    for k, (tr, va) in enumerate(folds):
        t0 = time.perf_counter()
        model, stats, best, ran, n_fit = _fit(ds, features, schema, tr, cfg, settings.seed + k + 1)
        fit_time = time.perf_counter() - t0
        oof[va] = predict_raw(model, ds.columns, stats, va)
        rows_seen += n_fit * ran
        fit_seconds += fit_time
        fold_results.append(FoldResult(k, best, ran, round(fit_time, 3), binary_metrics(ds.y[va], oof[va])))
        log.info("fold %d/%d: best epoch %d of %d, roc_auc %.4f, %.1fs", k + 1, cfg.cv_folds, best, ran,
                 fold_results[-1].metrics["roc_auc"], fit_time)
    cv_seconds = time.perf_counter() - t_cv
    # The final network is trained like the fold networks whose out-of-fold scores gave the
    # metrics and the calibrator: for the epoch count early stopping chose there (the median),
    # on every row, so no rows are held back from the model that ships.
    final_epochs = max(1, int(round(float(np.median([f.best_epoch for f in fold_results])))))
    t0 = time.perf_counter()
    model, stats, best, ran, n_fit = _fit(ds, features, schema, np.arange(ds.n_rows), cfg, settings.seed,
                                          epochs=final_epochs)
    final_seconds = time.perf_counter() - t0
    rows_seen += n_fit * ran
    fit_seconds += final_seconds
    params = {**cfg.model_dump(mode="json"), "seed": settings.seed, "model_type": MODEL_TYPE,
              "features": features.names}
    return TrainResult(
        model=model, oof_raw=oof, folds=folds, fold_results=fold_results, final_epochs=final_epochs,
        stats=stats, params=params,
        timings={"cv_seconds": round(cv_seconds, 3), "final_fit_seconds": round(final_seconds, 3)},
        training_rows_per_second=round(rows_seen / fit_seconds, 1) if fit_seconds else 0.0,
    )
