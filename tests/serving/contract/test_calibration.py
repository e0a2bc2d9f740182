import pickle

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from serving.contract.calibration import (
    BetaCalibrator,
    IdentityCalibrator,
    IsotonicCalibrator,
    SigmoidCalibrator,
    dump_calibrator,
    load_calibrator,
)
from serving.contract.digest import sha256_file
from serving.contract.errors import IntegrityError
from tasks.training.calibrate import ISOTONIC_TIE_BREAK, fit_calibrator

pytestmark = pytest.mark.unit


def test_isotonic_matches_scikit_learn():
    rng = np.random.default_rng(0)
    raw = rng.random(2000)
    y = (rng.random(raw.size) < raw**2).astype(int)
    ours = fit_calibrator("isotonic", raw, y)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(raw, y)
    probe = np.r_[-0.5, np.linspace(0, 1, 501), 1.5]
    plain = IsotonicCalibrator(ours.x, ours.y, "", tie_break=0.0)
    assert np.max(np.abs(plain(probe) - ref.predict(probe))) < 1e-12
    # What ships is blended with the raw score: strictly increasing, and never more than tie_break away.
    shipped = ours(probe)
    assert ours.tie_break == ISOTONIC_TIE_BREAK and np.all(np.diff(shipped[1:-1]) > 0)   # raw scores lie in [0, 1]
    assert np.max(np.abs(shipped - ref.predict(probe))) <= ISOTONIC_TIE_BREAK
    expected = (1 - ISOTONIC_TIE_BREAK) * ref.predict(probe) + ISOTONIC_TIE_BREAK * np.clip(probe, 0, 1)
    assert np.max(np.abs(shipped - expected)) < 1e-12


def test_sigmoid_recovers_platt_parameters():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.01, 0.99, 20_000)
    logit = np.log(raw / (1 - raw))
    y = (rng.random(raw.size) < 1 / (1 + np.exp(-(0.5 * logit - 1.0)))).astype(int)
    cal = fit_calibrator("sigmoid", raw, y)
    assert isinstance(cal, SigmoidCalibrator)
    assert cal.a == pytest.approx(0.5, abs=0.05)
    assert cal.b == pytest.approx(-1.0, abs=0.05)


def test_round_trip_only_after_hash_matches(tmp_path):
    cal = IsotonicCalibrator((0.0, 1.0), (0.1, 0.9), "digest")
    path = tmp_path / "calibrator.pkl"
    dump_calibrator(cal, path)
    loaded = load_calibrator(path, sha256_file(path))
    assert loaded.x == cal.x and loaded.model_digest == "digest"
    # The guide's verification snippet: plain pickle works and names the type.
    assert type(pickle.loads(path.read_bytes())).__name__ == "IsotonicCalibrator"
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        load_calibrator(path, "0" * 64)


@pytest.mark.parametrize("cal", [IdentityCalibrator("d"), SigmoidCalibrator(0.5, -1.0, "d"),
                                 BetaCalibrator(0.8, 1.3, 0.2, "d"),
                                 IsotonicCalibrator((0.1, 0.5, 0.9), (0.0, 0.4, 1.0), "d", 1e-3)],
                         ids=lambda c: c.method)
def test_every_calibrator_round_trips_through_the_allow_list_and_binds_to_a_model(cal, tmp_path):
    path = tmp_path / "calibrator.pkl"
    dump_calibrator(cal.bound_to("model-digest"), path)
    loaded = load_calibrator(path, sha256_file(path))
    probe = np.linspace(0, 1, 101)
    assert type(loaded) is type(cal) and loaded.method == cal.method and loaded.model_digest == "model-digest"
    assert loaded.params() == cal.params() and np.array_equal(loaded(probe), cal(probe))
    assert np.all(np.diff(loaded(probe)) > 0)      # strictly increasing: the ranking is the network's


def test_identity_serves_the_raw_score():
    raw = np.array([0.0, 0.2, 0.7, 1.0], dtype=np.float32)
    out = IdentityCalibrator("d")(raw)
    assert out.dtype == np.float64 and np.array_equal(out, raw.astype(np.float64))


def test_beta_with_a_equal_b_is_platt_and_identity_at_one_one_zero():
    p = np.linspace(0.01, 0.99, 99)
    assert np.allclose(BetaCalibrator(1.0, 1.0, 0.0, "")(p), p, atol=1e-12)
    assert np.allclose(BetaCalibrator(0.5, 0.5, -1.0, "")(p), SigmoidCalibrator(0.5, -1.0, "")(p), atol=1e-12)


class _IsotonicPickledBeforeTheTieBreak:
    """Pickles as calibrator.pkl files written before the tie-break did: three arguments."""

    def __reduce__(self):
        return (IsotonicCalibrator, ((0.0, 0.5, 1.0), (0.1, 0.1, 0.9), "digest"))


def test_an_isotonic_calibrator_pickled_before_the_tie_break_still_loads_unchanged(tmp_path):
    path = tmp_path / "calibrator.pkl"
    path.write_bytes(pickle.dumps(_IsotonicPickledBeforeTheTieBreak(), protocol=4))
    loaded = load_calibrator(path, sha256_file(path))
    assert isinstance(loaded, IsotonicCalibrator) and loaded.tie_break == 0.0
    assert loaded(np.array([0.25]))[0] == pytest.approx(0.1)     # the old plain isotonic map


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_foreign_pickle_is_refused_even_with_a_matching_hash(tmp_path):
    path = tmp_path / "calibrator.pkl"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(IntegrityError, match="not a calibrator"):
        load_calibrator(path, sha256_file(path))
