"""A calibrator pickled before the server's rooms (``serving.calibration``, the flat layout) still loads:
a rollback to a version exported then, or its copy in the registry cache, must not be refused."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from serving.contract.calibration import SigmoidCalibrator, load_calibrator
from serving.contract.digest import sha256_bytes
from serving.contract.errors import IntegrityError

pytestmark = pytest.mark.unit

# pickle.dumps(SigmoidCalibrator(1.5, -0.25, "ab" * 32), protocol=4) by the code at b770315 (serving/calibration.py)
FLAT_LAYOUT_SIGMOID = base64.b64decode(
    "gASVhgAAAAAAAACME3NlcnZpbmcuY2FsaWJyYXRpb26UjBFTaWdtb2lkQ2FsaWJyYXRvcpSTlEc/+AAAAAAAAEe/0AAAAAAAAIxAYWJhYmFi"
    "YWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYpSHlFKULg==")


def test_a_calibrator_pickled_by_the_flat_layout_loads_and_scores_as_it_did(tmp_path):
    assert b"serving.calibration" in FLAT_LAYOUT_SIGMOID
    path = tmp_path / "calibrator.pkl"
    path.write_bytes(FLAT_LAYOUT_SIGMOID)
    calibrator = load_calibrator(path, sha256_bytes(FLAT_LAYOUT_SIGMOID))
    assert isinstance(calibrator, SigmoidCalibrator) and calibrator.model_digest == "ab" * 32
    # what the flat layout's SigmoidCalibrator answered for these raw scores
    assert np.allclose(calibrator(np.array([0.2, 0.7])), [0.08871380070193699, 0.735156981760917], rtol=0, atol=1e-15)


def test_the_legacy_name_opens_no_other_class(tmp_path):
    forged = FLAT_LAYOUT_SIGMOID.replace(b"\x8c\x13serving.calibration", b"\x8c\x13serving.calibrat1on")
    path = tmp_path / "calibrator.pkl"
    path.write_bytes(forged)
    with pytest.raises(IntegrityError, match="not a calibrator"):
        load_calibrator(path, sha256_bytes(forged))
