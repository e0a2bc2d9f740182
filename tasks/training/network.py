"""The TabularANN graph: in-graph preprocessing, periodic (PLR) numeric embeddings, an MLP, and the
fold models fused into one ensemble graph.

A model trained on one fold has one *member*; the ensemble that ships has one member per fold, each
with its own imputation and normalisation constants and weights, and outputs the mean of their
probabilities. The members are fused, not stacked side by side: every matmul is one plain 2-D matmul
whose kernel is block-diagonal over the members ([M*i, M*o]), and per-member constants broadcast
along a member axis, so scoring five members takes the same operations as scoring one. Scoring one
row is dominated by the count of graph operations, and on CPU a batched matmul (one per member) costs
several times a 2-D one, hence this layout.

Numeric features follow Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning": after imputation and standardisation, each feature x becomes
v = [sin(2πcx), cos(2πcx)] with learnable per-feature frequencies c ~ N(0, σ), then Linear + ReLU.
The Linear is shared by the features (the "lite" variant of the authors' rtdl_num_embeddings
package): a per-feature Linear would need a batched matmul per feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.contract.inputs import MISSING_CATEGORY
from serving.contract.schema import tensor_name
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
    """Per numeric feature and member: fill, mean, std ([F, M]); which features are logged ([F, 1])."""
    numeric = [[s for s in stats if s.kind == "numeric"] for stats in members]
    table = {key: np.array([[getattr(s, key) for s in stats] for stats in numeric], dtype=np.float32).T
             for key in ("fill", "mean", "std")}
    table["log"] = np.array([[s.log] for s in numeric[0]], dtype=bool)
    return table


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    from scipy.linalg import block_diag

    return block_diag(*blocks).astype(blocks[0].dtype)


# How each kind of weight of the members becomes the ensemble's weight.
FUSE_RULES = {
    "block": _block_diagonal,                                  # kernels: [i, o] -> [M*i, M*o]
    "concat": lambda ws: np.concatenate(ws, axis=0),           # biases, embedding tables: along axis 0
    "members": lambda ws: np.concatenate(ws, axis=1),          # frequencies [F, 1, k] -> [F, M, k]
}


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

    def glorot(fan_in, fan_out):
        # Initialised as one member's [fan_in, fan_out] kernel; an ensemble's weights are set by fuse().
        limit = math.sqrt(6 / (fan_in + fan_out))
        return keras.initializers.RandomUniform(-limit, limit, seed=next(seeds))

    class NumericBlock(layers.Layer):
        """Numeric inputs -> imputed, (log-)standardised, optionally PLR-embedded: [B, M, F*w]."""

        def __init__(self, constants, embedding, **kwargs):
            super().__init__(autocast=False, **kwargs)
            self.constants = constants
            self.embedding = embedding
            self.n_features = constants["fill"].shape[0]
            self.width = (embedding[1] + cfg.embedding_with_value) if embedding else 1
            self.fuse_rules = []
            if embedding is not None:
                k, d, sigma = embedding
                self.frequencies = self.add_weight(
                    shape=(self.n_features, n_members, k), name="frequencies",
                    initializer=keras.initializers.RandomNormal(0.0, sigma, seed=next(seeds)))
                self.kernel = self.add_weight(shape=(n_members * 2 * k, n_members * d), name="kernel",
                                              regularizer=reg, initializer=glorot(2 * k, d))
                self.bias = self.add_weight(shape=(n_members * d,), name="bias", initializer="zeros")
                self.fuse_rules = ["members", "block", "concat"]

        def call(self, inputs):
            # Keras hands float64 arrays to fit() as float32, while the SavedModel takes float64:
            # casting first makes training and serving compute on exactly the same numbers.
            x = tf.cast(tf.stack(inputs, axis=1), tf.float32)[:, :, None]           # [B, F, 1]
            c = self.constants
            x = tf.where(tf.math.is_nan(x), c["fill"], x)                            # [B, F, M]
            if c["log"].any():
                x = tf.where(c["log"], tf.math.log1p(tf.maximum(x, 0.0)), x)
            x = ((x - c["mean"]) / c["std"])[..., None]                              # [B, F, M, 1]
            if self.embedding is not None:
                k, d, _sigma = self.embedding
                angles = (2 * math.pi) * x * self.frequencies                         # [B, F, M, k]
                v = tf.reshape(tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1), (-1, n_members * 2 * k))
                v = tf.nn.relu(tf.matmul(v, self.kernel) + self.bias)                 # [B*F, M*d]
                v = tf.reshape(v, (-1, self.n_features, n_members, d))
                # The standardised value itself beside its embedding: a linear path the MLP can fall
                # back on where the periodic features would overfit (small sets).
                x = tf.concat([x, v], axis=-1) if cfg.embedding_with_value else v
            x = tf.transpose(x, (0, 2, 1, 3))                                       # [B, M, F, w]
            return tf.reshape(x, (-1, n_members, self.n_features * self.width))

    class CategoricalBlock(layers.Layer):
        """One categorical input -> per member one-hot or embedding: [B, M, V+1] or [B, M, e]."""

        def __init__(self, vocabulary, fills, embedding_dim, **kwargs):
            super().__init__(**kwargs)
            self.vocabulary, self.embedding_dim = list(vocabulary), embedding_dim
            self.size = len(vocabulary) + 1
            self.lookup = layers.StringLookup(vocabulary=self.vocabulary, num_oov_indices=1, output_mode="int")
            # Where the value is missing, each member reads its own fill value's index (OOV for none).
            index = {v: i + 1 for i, v in enumerate(self.vocabulary)}
            self.fill_index = np.array([index.get(f, 0) for f in fills], dtype=np.int64)     # [M]
            self.fuse_rules = []
            if embedding_dim:
                # All members' tables stacked: member m's rows start at m * (V+1).
                self.offsets = np.arange(n_members, dtype=np.int64) * self.size
                self.table = self.add_weight(
                    shape=(n_members * self.size, embedding_dim), name="embeddings",
                    initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=next(seeds)))
                self.fuse_rules = ["concat"]

        def call(self, x):
            x = tf.strings.strip(x)
            idx = tf.cast(self.lookup(x), tf.int64)[:, None]                          # [B, 1]
            idx = tf.where(tf.equal(x, MISSING_CATEGORY)[:, None], self.fill_index, idx)  # [B, M]
            if not self.embedding_dim:
                return tf.one_hot(idx, self.size, dtype=tf.float32)                   # [B, M, V+1]
            return tf.gather(self.table, idx + self.offsets)                         # [B, M, e]

    class MemberDense(layers.Layer):
        """A dense layer per member as one 2-D matmul with a block-diagonal kernel: [B, M*i] -> [B, M*o]."""

        def __init__(self, units, activation, **kwargs):
            super().__init__(**kwargs)
            self.units, self.activation = units, keras.activations.get(activation)
            self.fuse_rules = ["block", "concat"]

        def build(self, input_shape):
            fan_in = input_shape[-1] // n_members
            self.kernel = self.add_weight(shape=(n_members * fan_in, n_members * self.units), name="kernel",
                                          regularizer=reg if self.units > 1 else None,
                                          initializer=glorot(fan_in, self.units))
            self.bias = self.add_weight(shape=(n_members * self.units,), name="bias", initializer="zeros")

        def call(self, x):
            return self.activation(tf.matmul(x, self.kernel) + self.bias)

    class WideCross(layers.Layer):
        """Wide & Deep's memorisation path (Cheng et al. 2016): per member a learned logit for the hashed cross
        of every raw input value, added to the member's logit: [B, M]. A feature vector seen in training
        keeps its own logit; an unseen one lands in an untrained (zero) bucket, up to hash collisions."""

        def __init__(self, buckets, **kwargs):
            super().__init__(autocast=False, **kwargs)
            self.buckets = buckets
            self.offsets = np.arange(n_members, dtype=np.int64) * buckets
            self.table = self.add_weight(shape=(n_members * buckets,), name="logits", initializer="zeros",
                                         regularizer=reg)
            self.fuse_rules = ["concat"]

        def call(self, inputs):
            # Numbers as float32 (what fit() hands over; the SavedModel takes float64) with 9 significant
            # digits, which round-trips a float32 exactly: training and serving hash the same text.
            parts = [tf.strings.strip(x) if x.dtype == tf.string else
                     tf.strings.as_string(tf.cast(x, tf.float32), precision=8, scientific=True) for x in inputs]
            key = tf.strings.reduce_join(tf.stack(parts, axis=1), axis=1, separator="\x1f")
            idx = tf.strings.to_hash_bucket_fast(key, self.buckets)[:, None] + self.offsets   # [B, M]
            return tf.gather(self.table, idx)

    class MemberMean(layers.Layer):
        def call(self, x):
            return tf.reduce_mean(x, axis=-1)

    class Flatten(layers.Layer):
        def call(self, x):
            return tf.reshape(x, (-1, n_members * x.shape[-1]))                      # member-major blocks

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
    x = layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]      # [B, M, W]
    x = Flatten(name="members")(x)                                                       # [B, M*W]
    for i, units in enumerate(cfg.hidden_units):
        x = MemberDense(units, "relu", name=f"dense_{i}")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"dropout_{i}", seed=next(seeds))(x)
    if cfg.wide_buckets:
        logits = MemberDense(1, "linear", name="score")(x)                                 # [B, M]
        wide = WideCross(cfg.wide_buckets, name="wide")([inputs[tensor_name(s.name)] for s in layout])
        x = layers.Activation("sigmoid", name="score_probability")(layers.Add(name="deep_and_wide")([logits, wide]))
    else:
        x = MemberDense(1, "sigmoid", name="score")(x)                                   # [B, M]
    out = MemberMean(name="probability")(x)
    return keras.Model(inputs, out, name=MODEL_TYPE)


def fuse(models: list, members: list[list[FeatureStats]], cfg: TrainingSettings, seed: int):
    """One model whose members are ``models`` (each built with one member), their weights fused."""
    ensemble = build_model(members, cfg, seed)
    for layer in ensemble.layers:
        rules = getattr(layer, "fuse_rules", None)
        if rules:
            per_member = [m.get_layer(layer.name).get_weights() for m in models]
            layer.set_weights([FUSE_RULES[rule](list(ws)) for rule, ws in zip(rules, zip(*per_member))])
    return ensemble
