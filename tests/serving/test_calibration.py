import pickle

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from serving.calibration import (
    IsotonicCalibrator,
    SigmoidCalibrator,
    dump_calibrator,
    load_calibrator,
)
from serving.digest import sha256_file
from serving.errors import IntegrityError
from tasks.training.calibrate import fit_calibrator

pytestmark = pytest.mark.unit


def test_isotonic_matches_scikit_learn():
    rng = np.random.default_rng(0)
    raw = rng.random(2000)
    y = (rng.random(raw.size) < raw**2).astype(int)
    ours = fit_calibrator("isotonic", raw, y)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(raw, y)
    probe = np.r_[-0.5, np.linspace(0, 1, 501), 1.5]
    assert np.max(np.abs(ours(probe) - ref.predict(probe))) < 1e-12


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


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_foreign_pickle_is_refused_even_with_a_matching_hash(tmp_path):
    path = tmp_path / "calibrator.pkl"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(IntegrityError, match="not a calibrator"):
        load_calibrator(path, sha256_file(path))
