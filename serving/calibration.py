"""Calibrators applied after the network: plain numpy, safe to unpickle.

They are fitted on the training side (``tasks/training/calibrate.py``, with scikit-learn)
and stored here as a few numbers, so serving needs neither scikit-learn nor a
general unpickler. ``load_calibrator`` checks the file's SHA-256 first and then
unpickles with an allow-list of exactly these classes.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from serving.digest import sha256_bytes
from serving.errors import IntegrityError

LOGIT_CLIP = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped away from 0 and 1."""
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


class IsotonicCalibrator:
    """Piecewise-linear monotone map, identical to scikit-learn's IsotonicRegression(out_of_bounds='clip')."""

    method = "isotonic"

    def __init__(self, x: tuple[float, ...], y: tuple[float, ...], model_digest: str) -> None:
        self.x = tuple(float(v) for v in x)
        self.y = tuple(float(v) for v in y)
        self.model_digest = model_digest
        self._x = np.asarray(self.x)
        self._y = np.asarray(self.y)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(raw, dtype=np.float64), self._x, self._y)

    def __reduce__(self):
        return (IsotonicCalibrator, (self.x, self.y, self.model_digest))

    def params(self) -> dict:
        return {"x": list(self.x), "y": list(self.y)}

    def bound_to(self, model_digest: str) -> IsotonicCalibrator:
        return IsotonicCalibrator(self.x, self.y, model_digest)


class SigmoidCalibrator:
    """Platt scaling on the logit of the raw score: sigmoid(a * logit(p) + b)."""

    method = "sigmoid"

    def __init__(self, a: float, b: float, model_digest: str) -> None:
        self.a = float(a)
        self.b = float(b)
        self.model_digest = model_digest

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = self.a * logit(np.asarray(raw, dtype=np.float64)) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def __reduce__(self):
        return (SigmoidCalibrator, (self.a, self.b, self.model_digest))

    def params(self) -> dict:
        return {"a": self.a, "b": self.b}

    def bound_to(self, model_digest: str) -> SigmoidCalibrator:
        return SigmoidCalibrator(self.a, self.b, model_digest)


Calibrator = IsotonicCalibrator | SigmoidCalibrator
_ALLOWED = {("serving.calibration", "IsotonicCalibrator"): IsotonicCalibrator,
            ("serving.calibration", "SigmoidCalibrator"): SigmoidCalibrator}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise IntegrityError(f"calibrator pickle refers to {module}.{name}, which is not a calibrator") from None


def load_calibrator(path: str | Path, expected_sha256: str) -> Calibrator:
    """Unpickle a calibrator, but only once its bytes hash to ``expected_sha256``."""
    blob = Path(path).read_bytes()
    actual = sha256_bytes(blob)
    if actual != expected_sha256:
        raise IntegrityError(f"{path}: SHA-256 {actual[:12]}… does not match the manifest's {expected_sha256[:12]}…")
    try:
        obj = _AllowListUnpickler(io.BytesIO(blob)).load()
    except IntegrityError:
        raise
    except Exception as exc:  # a truncated or foreign pickle
        raise IntegrityError(f"{path}: not a readable calibrator: {exc}") from None
    if not isinstance(obj, IsotonicCalibrator | SigmoidCalibrator):
        raise IntegrityError(f"{path}: holds a {type(obj).__name__}, not a calibrator")
    return obj


def dump_calibrator(calibrator: Calibrator, path: str | Path) -> None:
    Path(path).write_bytes(pickle.dumps(calibrator, protocol=4))
