"""The TabularANN graph: in-graph preprocessing, periodic (PLR) numeric embeddings, an MLP, and the
fold models fused into one ensemble graph.

Every layer carries a leading *member* axis: a model trained on one fold has one member; the
ensemble that ships stacks the fold models' weights and preprocessing constants along that axis, so
scoring five members costs the same number of graph operations as scoring one (a batched matmul per
layer instead of five sub-graphs), and each member keeps its own imputation and normalisation.

Numeric features follow Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning": after imputation and standardisation, each feature x becomes
v = [sin(2πcx), cos(2πcx)] with learnable frequencies c ~ N(0, σ), then a per-feature Linear + ReLU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.inputs import MISSING_CATEGORY
from serving.schema import tensor_name
from tasks.constants import MODEL_TYPE

if TYPE_CHECKING:
    from tasks.settings import TrainingSettings


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


def _numeric_constants(members: list[list[FeatureStats]]) -> dict[str, np.ndarray]:
    """Per member and numeric feature: fill, mean, std ([M, F]); which features are logged ([F])."""
    numeric = [[s for s in stats if s.kind == "numeric"] for stats in members]
    table = {key: np.array([[getattr(s, key) for s in stats] for stats in numeric], dtype=np.float32)
             for key in ("fill", "mean", "std")}
    table["log"] = np.array([s.log for s in numeric[0]], dtype=bool)
    return table


def build_model(members: list[list[FeatureStats]], cfg: TrainingSettings, seed: int):
    """The TabularANN with ``len(members)`` members; its output is the mean of the members' probabilities.

    Args:
        members: each member's preprocessing constants, same features in the same order.
        seed: seeds every random layer (initialisers, dropout) explicitly.
    """
    import keras
    import tensorflow as tf
    from keras import layers

    n_members = len(members)
    layout = members[0]
    # Every random layer gets its own explicit seed: unseeded Keras layers draw from the process-wide
    # `random` module, which other threads (Prefect's) advance at any time, so a fold could differ.
    seeds = iter(range(seed * 1_000, seed * 1_000 + 1_000))
    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 else None

    class NumericBlock(layers.Layer):
        """Numeric inputs -> imputed, (log-)standardised, optionally PLR-embedded: [B, M, F*d]."""

        def __init__(self, constants, embedding, **kwargs):
            super().__init__(autocast=False, **kwargs)
            self.constants = constants
            self.embedding = embedding
            self.n_features = constants["fill"].shape[1]
            if embedding is not None:
                k, d, sigma = embedding
                shape = (n_members, self.n_features)
                self.frequencies = self.add_weight(
                    shape=(*shape, k), name="frequencies",
                    initializer=keras.initializers.RandomNormal(0.0, sigma, seed=next(seeds)))
                self.kernel = self.add_weight(
                    shape=(*shape, 2 * k, d), name="kernel", regularizer=reg,
                    initializer=keras.initializers.GlorotUniform(seed=next(seeds)))
                self.bias = self.add_weight(shape=(*shape, d), name="bias", initializer="zeros")

        def call(self, inputs):
            # Keras hands float64 arrays to fit() as float32, while the SavedModel takes float64:
            # casting first makes training and serving compute on exactly the same numbers.
            x = tf.cast(tf.stack(inputs, axis=-1), tf.float32)[:, None, :]          # [B, 1, F]
            c = self.constants
            x = tf.where(tf.math.is_nan(x), c["fill"], x)                            # [B, M, F]
            if c["log"].any():
                x = tf.where(c["log"], tf.math.log1p(tf.maximum(x, 0.0)), x)
            x = (x - c["mean"]) / c["std"]
            if self.embedding is None:
                return x
            angles = (2 * math.pi) * x[..., None] * self.frequencies                  # [B, M, F, k]
            v = tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)
            v = tf.nn.relu(tf.einsum("bmfk,mfkd->bmfd", v, self.kernel) + self.bias)
            v = tf.reshape(v, (-1, n_members, self.n_features * self.embedding[1]))
            # The standardised value itself beside its embedding: a linear path the MLP can fall back on
            # where the periodic features would overfit (small sets).
            return tf.concat([x, v], axis=-1) if cfg.embedding_with_value else v

    class CategoricalBlock(layers.Layer):
        """One categorical input -> per member one-hot or embedding: [B, M, V+1] or [B, M, e]."""

        def __init__(self, vocabulary, fills, embedding_dim, **kwargs):
            super().__init__(**kwargs)
            self.vocabulary, self.embedding_dim = list(vocabulary), embedding_dim
            self.size = len(vocabulary) + 1
            self.lookup = layers.StringLookup(vocabulary=self.vocabulary, num_oov_indices=1, output_mode="int")
            # Where the value is missing, each member reads its own fill value's index (OOV for none).
            index = {v: i + 1 for i, v in enumerate(self.vocabulary)}
            self.fill_index = np.array([index.get(f, 0) for f in fills], dtype=np.int64)
            if embedding_dim:
                self.table = self.add_weight(
                    shape=(n_members, self.size, embedding_dim), name="embeddings",
                    initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=next(seeds)))

        def call(self, x):
            x = tf.strings.strip(x)
            idx = tf.cast(self.lookup(x), tf.int64)[:, None]                          # [B, 1]
            idx = tf.where(tf.equal(x, MISSING_CATEGORY)[:, None], self.fill_index, idx)
            onehot = tf.one_hot(idx, self.size, dtype=tf.float32)                     # [B, M, V+1]
            if not self.embedding_dim:
                return onehot
            return tf.einsum("bmv,mve->bme", onehot, self.table)

    class MemberDense(layers.Layer):
        """A dense layer per member, computed as one batched matmul: [B, M, i] -> [B, M, o]."""

        def __init__(self, units, activation, **kwargs):
            super().__init__(**kwargs)
            self.units, self.activation = units, keras.activations.get(activation)

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(n_members, input_shape[-1], self.units), name="kernel",
                                          regularizer=reg if self.units > 1 else None,
                                          initializer=keras.initializers.GlorotUniform(seed=next(seeds)))
            self.bias = self.add_weight(shape=(n_members, self.units), name="bias", initializer="zeros")

        def call(self, x):
            return self.activation(tf.einsum("bmi,mio->bmo", x, self.kernel) + self.bias)

    class MemberMean(layers.Layer):
        def call(self, x):
            return tf.reduce_mean(x[..., 0], axis=-1)

    inputs = {tensor_name(s.name): keras.Input(shape=(), name=tensor_name(s.name),
                                               dtype="string" if s.kind == "categorical" else "float64")
              for s in layout}
    parts = []
    numeric = [inputs[tensor_name(s.name)] for s in layout if s.kind == "numeric"]
    if numeric:
        embedding = ((cfg.embedding_frequencies, cfg.embedding_dim, cfg.embedding_sigma)
                     if cfg.numeric_embedding == "periodic" else None)
        parts.append(NumericBlock(_numeric_constants(members), embedding, name="numeric")(numeric))
    for i, s in enumerate(layout):
        if s.kind == "categorical":
            block = CategoricalBlock(s.vocabulary, [m[i].fill for m in members], s.embedding_dim,
                                     name=f"categorical_{tensor_name(s.name)}")
            parts.append(block(inputs[tensor_name(s.name)]))
    x = layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    for i, units in enumerate(cfg.hidden_units):
        x = MemberDense(units, "relu", name=f"dense_{i}")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{i}", seed=next(seeds))(x)
    x = MemberDense(1, "sigmoid", name="score")(x)
    out = MemberMean(name="probability")(x)
    return keras.Model(inputs, out, name=MODEL_TYPE)


def fuse(models: list, members: list[list[FeatureStats]], cfg: TrainingSettings, seed: int):
    """One model whose members are ``models`` (each built with one member): their weights stacked."""
    ensemble = build_model(members, cfg, seed)
    ensemble.set_weights([np.concatenate(ws, axis=0) for ws in zip(*(m.get_weights() for m in models))])
    return ensemble
