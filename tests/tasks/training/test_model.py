"""Training, calibration and export on a small demo set: behaviour a user would check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from serving.contract.errors import IntegrityError
from serving.contract.metadata import read_metadata, verify_files
from serving.contract.model import LoadedModel
from tasks.errors import TrainingError
from tasks.settings import load_settings
from tasks.training.calibrate import calibrate
from tasks.training.data import load_dataset
from tasks.training.export import export_model
from tasks.training.train import model_inputs, predict_raw, train
from tests.conftest import DEMO_TRAINING, FAST_CONFIG

pytestmark = pytest.mark.unit
# The tests that train networks of their own (a fit costs about 3 s a fold, most of it TensorFlow tracing the
# new model) are integration tests: `make test` runs them, the edit loop (make test-fast) uses the session's
# one demo model.
trains_its_own = pytest.mark.integration


@pytest.fixture
def trained(demo_model):
    """The session's demo model (tests/conftest.py: seed 7, 2 folds x 8 epochs, exported as version 1)."""
    return demo_model


def _settings(trained, home, **overrides):
    """The demo model's settings with ``overrides``, under ``home``."""
    return load_settings(trained["home"] / "pipeline.yaml", env={"PIPELINE_HOME": str(home)},
                         overrides={**DEMO_TRAINING, **overrides})


def test_folds_are_stratified_and_out_of_fold(trained):
    ds, result = trained["ds"], trained["train"]
    seen = np.concatenate([va for _tr, va in result.folds])
    assert np.array_equal(np.sort(seen), np.arange(ds.n_rows))          # every row predicted exactly once
    for tr, va in result.folds:
        assert not np.intersect1d(tr, va).size                          # never by a model that saw it
        assert abs(ds.y[va].mean() - ds.y.mean()) < 0.03               # stratified
    assert np.isfinite(result.oof_raw).all()
    assert result.training_rows_per_second > 0


@trains_its_own
def test_same_seed_same_model(trained):
    """Bit-identical, even while another thread draws from the process-wide ``random`` module (as
    Prefect's background threads do; unseeded Keras layers used to draw their seeds from it)."""
    import random
    import threading

    stop = threading.Event()
    draws = []

    def draw():
        # A draw every half millisecond advances `random` thousands of times during training without
        # holding the GIL against TensorFlow's Python side (a busy loop made this test 10x slower).
        while not stop.wait(0.0005):
            draws.append(random.random())

    noise = threading.Thread(target=draw, daemon=True)
    noise.start()
    try:
        again = train(trained["ds"], trained["schema"], trained["features"], trained["settings"])
    finally:
        stop.set()
        noise.join(timeout=10)
    assert len(draws) > 1000
    np.testing.assert_array_equal(again.oof_raw, trained["train"].oof_raw)
    a = predict_raw(trained["train"].model, trained["ds"].columns, trained["train"].stats)
    b = predict_raw(again.model, trained["ds"].columns, again.stats)
    np.testing.assert_array_equal(a, b)


def test_the_model_that_ships_is_the_fold_models_that_were_evaluated(trained):
    """No separate final fit: the ensemble is the mean of the fold models whose out-of-fold scores gave
    the metrics and the calibrator, each with its own preprocessing constants."""
    ds, result = trained["ds"], trained["train"]
    assert result.ensemble_members == len(result.folds) == len(result.fold_models)
    members = []
    for model, stats, (_tr, va) in zip(result.fold_models, result.member_stats, result.folds):
        np.testing.assert_array_equal(predict_raw(model, ds.columns, stats, va), result.oof_raw[va])
        members.append(predict_raw(model, ds.columns, stats))
    assert result.member_stats[0] != result.member_stats[1]      # fitted on different rows
    np.testing.assert_allclose(predict_raw(result.model, ds.columns, result.stats), np.mean(members, axis=0),
                               atol=1e-6)


@trains_its_own
def test_the_search_ships_the_chosen_networks_fold_models_untouched(trained):
    """A search whose configured network is crippled (1 epoch at a tiny rate) and whose one candidate is the
    fast config: the candidate wins on inner validation, and what ships is bit for bit the model that
    training the fast config without a search gives (its fold fits are not refitted or disturbed)."""
    fast = trained["settings"].training
    settings = _settings(trained, trained["home"], **{
        "training.epochs": 1, "training.learning_rate": 1e-5,
        "training.search": {"enabled": True, "budget_s": None,
                            "candidates": [{"epochs": fast.epochs, "learning_rate": fast.learning_rate}]}})
    result = train(trained["ds"], trained["schema"], trained["features"], settings)
    record = result.search
    assert record["chosen"] == 1 and [c["status"] for c in record["candidates"]] == ["tried", "chosen"]
    crippled, fast = record["candidates"]
    assert crippled["val_loss"] > fast["val_loss"] and len(fast["val_losses"]) == len(result.folds)
    assert fast["val_auc"] > crippled["val_auc"]
    np.testing.assert_array_equal(result.oof_raw, trained["train"].oof_raw)
    assert result.params == trained["train"].params          # the chosen network's settings are recorded
    assert result.timings["search_seconds"] == record["seconds"] > 0
    for a, b in zip(result.model.get_weights(), trained["train"].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@trains_its_own
def test_a_network_with_the_wide_path_trains_exports_and_serves_what_was_trained(trained, tmp_path):
    """The memorisation path hashes the raw inputs in the graph: the SavedModel (float64 inputs) must score
    exactly what the trained Keras model (float32 in fit) scored; export's fidelity check and the golden
    examples through the server's loader say so."""
    settings = _settings(trained, tmp_path / "home", **{"training.wide_buckets": 4096})
    ds = trained["ds"]
    result = train(ds, trained["schema"], trained["features"], settings)
    assert result.params["wide_buckets"] == 4096
    assert np.count_nonzero(result.model.get_layer("wide").get_weights()[0]) > 100    # it learned
    cal = calibrate(result.oof_raw, ds.y, result.folds, "sigmoid", 10, None)
    exported = export_model(result, cal, ds, trained["schema"], trained["features"], settings, "1.0.0", {},
                            version="1")
    assert exported.fidelity_max_abs_diff <= 1e-5 and exported.golden_max_abs_diff <= 1e-6
    assert LoadedModel.load(exported.path).golden_max_error() <= 1e-6


def test_more_debt_means_more_risk(trained):
    ds, result = trained["ds"], trained["train"]
    columns = dict(ds.columns)
    base = predict_raw(result.model, columns, result.stats)
    columns["debt_ratio"] = ds.columns["debt_ratio"] + 1.0
    columns["late_payments"] = ds.columns["late_payments"] + 2
    riskier = predict_raw(result.model, columns, result.stats)
    assert np.mean(riskier > base) > 0.9


def test_preprocessing_is_in_the_graph(trained):
    """Raw values with gaps and an unseen category go straight in and give finite scores."""
    result = trained["train"]
    row = {"age": np.array([40.0]), "income": np.array([np.nan]), "debt_ratio": np.array([0.5]),
           "credit_lines": np.array([3.0]), "late_payments": np.array([0.0]),
           "employment_years": np.array([np.nan]), "region": np.array(["mars"], dtype=object),
           "purpose": np.array([""], dtype=object), "has_mortgage": np.array([1.0])}
    out = np.asarray(result.model(model_inputs(row, result.stats), training=False))
    assert np.isfinite(out).all() and 0 < out[0] < 1


def test_calibration_is_fitted_out_of_fold_and_reports_both_sides(trained):
    cal = trained["cal"]
    assert set(cal.summary) >= {"method", "ece_before", "ece_after"}
    assert cal.diagram.exists() and cal.diagram.stat().st_size > 5000
    assert cal.metrics_after["ece"] < 0.1


def test_calibration_fixes_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    truth = rng.random(6000)
    y = (rng.random(truth.size) < truth).astype(int)
    raw = truth**3    # a good ranking, badly calibrated
    folds = [(np.setdiff1d(np.arange(6000), va), va) for va in np.array_split(rng.permutation(6000), 5)]
    for method in ("isotonic", "sigmoid"):
        cal = calibrate(raw, y, folds, method, 10)
        assert cal.metrics_before["ece"] > 0.15
        assert cal.metrics_after["ece"] < 0.04, method
        assert cal.metrics_after["roc_auc"] == pytest.approx(cal.metrics_before["roc_auc"], abs=0.01)


@pytest.fixture
def exported(demo_model):
    return demo_model["exported"]


def test_export_layout_and_metadata(exported, trained):
    path = exported.path
    assert path == trained["settings"].models_dir / "1"
    assert {p.name for p in path.iterdir()} == {"saved_model", "calibrator.pkl", "metadata.json"}
    assert (path / "saved_model" / "saved_model.pb").exists()
    meta = json.loads((path / "metadata.json").read_text())
    for key in ("version", "model_type", "calibrator_method", "training_date", "cv_metrics", "schema",
                "schema_hash", "feature_list", "files", "golden_examples", "reference", "release"):
        assert key in meta, key
    assert meta["version"] == "1" and meta["release"] == "1.0.0" and meta["model_type"] == "TabularANN"
    assert set(meta["cv_metrics"]) >= {"roc_auc", "pr_auc", "brier", "ece"}
    assert "calibrator.pkl" in meta["files"] and any(k.startswith("saved_model/") for k in meta["files"])
    assert len(meta["golden_examples"]) == 12
    assert any(v is None for g in meta["golden_examples"] for v in g["features"].values())  # gaps included
    ref = meta["reference"]
    assert len(ref["numeric"]["income"]["fractions"]) == len(ref["numeric"]["income"]["edges"]) + 1
    assert sum(ref["categorical"]["region"]["frequencies"].values()) == pytest.approx(1.0)
    assert sum(ref["prediction"]["fractions"]) == pytest.approx(1.0)
    assert exported.fidelity_max_abs_diff < 1e-5
    assert not list(path.parent.glob(".staging-*"))
    assert meta["training"]["ensemble_members"] == 2      # the folds


def test_the_prediction_reference_is_out_of_sample(exported, trained):
    """The drift reference for predictions is the cross-fitted calibrated scores (no row scored by a
    calibrator that saw it), not the shipped calibrator applied to the rows it was fitted on."""
    from serving.contract.binning import bin_fractions

    cal = trained["cal"]
    prediction = read_metadata(exported.path).reference["prediction"]
    assert prediction["mean"] == pytest.approx(float(cal.oof_calibrated.mean()), abs=1e-12)
    assert prediction["fractions"] == pytest.approx(bin_fractions(cal.oof_calibrated, prediction["edges"]))
    assert prediction["fractions"] != pytest.approx(bin_fractions(cal.calibrator(trained["train"].oof_raw),
                                                                  prediction["edges"]), abs=1e-9)


def test_reloaded_model_reproduces_golden_examples(exported):
    model = LoadedModel.load(exported.path)
    assert model.golden_max_error() <= 1e-6


def test_the_export_is_named_by_its_registry_version_and_never_replaced(exported, trained):
    """The directory is the version it is given (the registry's, reserved); an existing one is refused
    and left as it was, and no staging folder is left behind."""
    t = trained
    args = (t["train"], t["cal"], t["ds"], t["schema"], t["features"], t["settings"])
    seventh = export_model(*args, "1.1.0", {}, version="7")
    assert seventh.path == t["settings"].models_dir / "7"
    assert seventh.version == "7" and read_metadata(seventh.path).version == "7"
    assert read_metadata(seventh.path).release == "1.1.0"
    before = (exported.path / "metadata.json").read_bytes()
    with pytest.raises(TrainingError, match="models/test-model/1 already exists"):
        export_model(*args, "9.9.9", {}, version="1")
    assert (exported.path / "metadata.json").read_bytes() == before
    assert not list(exported.path.parent.glob(".staging-*"))


def test_tampered_files_are_refused_before_loading(exported, tmp_path):
    copy = tmp_path / "v"
    shutil.copytree(exported.path, copy)
    verify_files(copy, read_metadata(copy))
    variables = next((copy / "saved_model" / "variables").glob("variables.data*"))
    blob = bytearray(variables.read_bytes())
    blob[-1] ^= 0xFF
    variables.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="variables.data.*manifest says"):
        LoadedModel.load(copy)


def test_calibrator_from_another_model_is_refused(exported, tmp_path):
    from serving.contract.calibration import dump_calibrator, load_calibrator
    from serving.contract.digest import sha256_file

    copy = tmp_path / "mixed"
    shutil.copytree(exported.path, copy)
    meta = read_metadata(copy)
    mine = load_calibrator(copy / "calibrator.pkl", meta.files["calibrator.pkl"])
    dump_calibrator(mine.bound_to("f" * 64), copy / "calibrator.pkl")
    # The manifest is made to agree with the foreign calibrator: only the digest binding can catch it.
    meta.files["calibrator.pkl"] = sha256_file(copy / "calibrator.pkl")
    (copy / "metadata.json").write_text(meta.to_json())
    with pytest.raises(IntegrityError, match="fitted for another SavedModel"):
        LoadedModel.load(copy)


@trains_its_own
def test_column_names_with_spaces_train_export_and_serve(tmp_path):
    """CSV headers like scikit-learn's 'mean radius' must work end to end."""
    import pandas as pd

    from serving.contract.schema import FeatureList, FeatureSpec, schema_from_dict

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"mean radius": rng.normal(10, 2, n), "tumour type": rng.choice(["a", "b"], n)})
    frame["target"] = (rng.random(n) < 1 / (1 + np.exp(-(frame["mean radius"] - 10)))).astype(int)
    frame.to_csv(tmp_path / "d.csv", index=False)
    schema = schema_from_dict({"target": {"name": "target", "positive_label": "1"},
                               "columns": [{"name": "mean radius", "type": "numeric"},
                                           {"name": "tumour type", "type": "categorical", "categories": ["a", "b"]}]})
    features = FeatureList(features=(FeatureSpec(name="mean radius", preprocessing="standardize"),
                                     FeatureSpec(name="tumour type", preprocessing="one_hot")))
    features.check_against(schema)
    (tmp_path / "p.yaml").write_text(FAST_CONFIG)
    settings = load_settings(tmp_path / "p.yaml", env={"PIPELINE_HOME": str(tmp_path / "home")},
                             overrides={"training.cv_folds": 2, "training.epochs": 15, "export.golden_examples": 4})
    ds = load_dataset(tmp_path / "d.csv", schema, min_rows=50)
    result = train(ds, schema, features, settings)
    cal = calibrate(result.oof_raw, ds.y, result.folds, "sigmoid", 10)
    exported = export_model(result, cal, ds, schema, features, settings, "1.0.0", version="1")
    model = LoadedModel.load(exported.path)
    assert model.golden_max_error() <= 1e-6
    raw, prob = model.score_rows([{"mean radius": 14.0, "tumour type": "b"}, {"mean radius": 6.0, "tumour type": "a"}])
    assert raw[0] > raw[1]


@pytest.mark.parametrize("method", ["none", "beta"])
def test_every_calibrator_kind_exports_and_serves_bound_to_its_model(trained, method, tmp_path):
    """"none" ships an identity calibrator.pkl, so each version still proves its SavedModel digest."""
    t = trained
    cal = calibrate(t["train"].oof_raw, t["ds"].y, t["train"].folds, method, 10)
    settings = _settings(t, tmp_path / "home")
    exported = export_model(t["train"], cal, t["ds"], t["schema"], t["features"], settings, "1.0.0", version="1")
    model = LoadedModel.load(exported.path)
    assert model.calibrator.method == model.metadata.calibrator_method == method
    assert model.calibrator.model_digest == model.metadata.model_digest
    assert set(model.metadata.calibration["candidates"]) == {"none", "sigmoid", "beta", "isotonic"}
    assert model.golden_max_error() <= 1e-6
    raw, prob = model.score_rows([g.features for g in model.metadata.golden_examples])
    assert np.array_equal(prob, raw) if method == "none" else not np.array_equal(prob, raw)
