"""The TabularANN graph: periodic embeddings and the fold models fused into one ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.settings import TrainingSettings
from tasks.training.network import FeatureStats
from tasks.training.train import model_inputs, predict_raw

pytestmark = pytest.mark.unit


def _member(fill: float, mean: float, std: float, cat_fill: str) -> list[FeatureStats]:
    return [FeatureStats("x", "numeric", fill=fill, mean=mean, std=std),
            FeatureStats("amount", "numeric", fill=1.0, mean=0.5, std=2.0, log=True),
            FeatureStats("colour", "categorical", fill=cat_fill, vocabulary=("red", "blue", "__missing__"),
                         embedding_dim=3),
            FeatureStats("size", "categorical", fill="", vocabulary=("s", "m", "l"))]


def _columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, n)
    x[::7] = np.nan
    amount = rng.exponential(3, n)
    amount[::5] = np.nan
    colour = rng.choice(["red", "blue", "", "green"], n).astype(object)
    size = rng.choice(["s", "m", "l", ""], n).astype(object)
    return {"x": x, "amount": amount, "colour": colour, "size": size}


@pytest.mark.parametrize("embedding", ["periodic", "none"])
def test_the_fused_ensemble_is_the_mean_of_its_members(embedding):
    """Each member keeps its own preprocessing constants and weights; one graph scores them all."""
    from tasks.training.network import build_model, fuse

    cfg = TrainingSettings(hidden_units=(8, 4), numeric_embedding=embedding, embedding_frequencies=4,
                           embedding_dim=3)
    members = [_member(0.0, 0.0, 1.0, "__missing__"), _member(2.0, -1.0, 3.0, "red"),
               _member(-1.0, 0.5, 0.5, "blue")]
    models = [build_model([stats], cfg, seed) for seed, stats in enumerate(members, start=1)]
    ensemble = fuse(models, members, cfg, seed=99)
    columns = _columns(300)
    each = np.stack([predict_raw(m, columns, stats) for m, stats in zip(models, members)])
    assert np.ptp(each, axis=0).max() > 1e-3                   # the members really differ
    np.testing.assert_allclose(predict_raw(ensemble, columns, members[0]), each.mean(axis=0), atol=1e-6)


def test_periodic_embeddings_are_learnable_and_seeded():
    from tasks.training.network import build_model

    cfg = TrainingSettings(hidden_units=(8,), embedding_frequencies=5, embedding_dim=4, embedding_sigma=0.3)
    a, b, c = (build_model([_member(0.0, 0.0, 1.0, "red")], cfg, seed) for seed in (3, 3, 4))
    freq = {w.path: w for w in a.trainable_weights}
    frequencies = next(w for path, w in freq.items() if "frequencies" in path)
    assert tuple(frequencies.shape) == (2, 1, 5)              # two numeric features, one member, k = 5
    assert 0.1 < float(np.std(frequencies.numpy())) < 0.6
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))


def test_a_missing_category_takes_each_members_fill():
    """Members imputed with different most-frequent categories score a missing value as their own fill."""
    from tasks.training.network import build_model, fuse

    cfg = TrainingSettings(hidden_units=(4,), numeric_embedding="none")
    members = [_member(0.0, 0.0, 1.0, "red"), _member(0.0, 0.0, 1.0, "blue")]
    models = [build_model([stats], cfg, seed) for seed, stats in enumerate(members, start=1)]
    ensemble = fuse(models, members, cfg, seed=5)
    row = {"x": np.array([0.3]), "amount": np.array([2.0]), "size": np.array(["m"], dtype=object)}
    missing = predict_raw(ensemble, {**row, "colour": np.array([""], dtype=object)}, members[0])
    as_fills = np.mean([predict_raw(m, {**row, "colour": np.array([s[2].fill], dtype=object)}, s)
                        for m, s in zip(models, members)])
    assert missing[0] == pytest.approx(as_fills, abs=1e-6)
    assert model_inputs(row | {"colour": np.array(["red"], dtype=object)}, members[0])["colour"].dtype == object


@pytest.mark.parametrize("schedule", ["constant", "plateau", "cosine"])
def test_the_learning_rate_schedule_is_the_configured_one(schedule):
    import keras

    from tasks.training.train import _callbacks, _optimizer

    cfg = TrainingSettings(lr_schedule=schedule, learning_rate=0.01, epochs=10)
    rate = _optimizer(cfg, steps_per_epoch=20).learning_rate
    plateau = [c for c in _callbacks(cfg) if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    assert len(plateau) == (schedule == "plateau")
    if schedule == "cosine":
        schedule_fn = _optimizer(cfg, steps_per_epoch=20)._learning_rate
        assert float(schedule_fn(0)) == pytest.approx(0.01)
        assert float(schedule_fn(200)) == pytest.approx(0.0001)        # alpha 0.01 at the last step
    else:
        assert float(rate) == pytest.approx(0.01)


def test_the_wide_path_is_fused_per_member_and_hashes_the_raw_values():
    """Each member's wide logits (one per hashed cross of the raw values) survive fusing; a vector's bucket
    is the same whether its numbers arrive as float64 (serving) or float32 (what fit() hands over)."""
    from tasks.training.network import build_model, fuse

    cfg = TrainingSettings(hidden_units=(4,), numeric_embedding="none", wide_buckets=64)
    members = [_member(0.0, 0.0, 1.0, "red"), _member(2.0, -1.0, 3.0, "blue")]
    models = [build_model([stats], cfg, seed) for seed, stats in enumerate(members, start=1)]
    rng = np.random.default_rng(0)
    for model in models:   # trained tables are not zero: give each member its own
        model.get_layer("wide").set_weights([rng.normal(0, 2, 64).astype("float32")])
    ensemble = fuse(models, members, cfg, seed=5)
    columns = _columns(200)
    each = np.stack([predict_raw(m, columns, stats) for m, stats in zip(models, members)])
    np.testing.assert_allclose(predict_raw(ensemble, columns, members[0]), each.mean(axis=0), atol=1e-6)

    wide = models[0].get_layer("wide")
    as64 = [columns["x"], columns["amount"], columns["colour"], columns["size"]]
    as32 = [columns["x"].astype(np.float32), columns["amount"].astype(np.float32), columns["colour"],
            columns["size"]]
    np.testing.assert_array_equal(np.asarray(wide(as64)), np.asarray(wide(as32)))
    # Identical rows share a logit, different rows mostly do not.
    logits = np.asarray(wide(as64))[:, 0]
    first = {tuple(str(c[i]) for c in as64): logits[i] for i in range(200)}
    assert all(first[tuple(str(c[i]) for c in as64)] == logits[i] for i in range(200))
    assert np.unique(logits).size > 30
