"""Calibrators applied after the network: plain numpy, safe to unpickle.

They are fitted on the training side (``tasks/training/calibrate.py``, with scikit-learn)
and stored here as a few numbers, so serving needs neither scikit-learn nor a
general unpickler. ``load_calibrator`` checks the file's SHA-256 first and then
unpickles with an allow-list of exactly these classes.

Every one is strictly increasing in the raw score (isotonic through a small tie-breaking
blend with the raw score), so calibration never changes the ranking: ROC-AUC is the network's.
``IdentityCalibrator`` ("none") is a calibrator too, so every version has a calibrator.pkl
bound to its SavedModel's digest.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from serving.contract.digest import sha256_bytes
from serving.contract.errors import IntegrityError

LOGIT_CLIP = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped away from 0 and 1."""
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


class IdentityCalibrator:
    """No calibration: the network's score is served as the probability."""

    method = "none"

    def __init__(self, model_digest: str) -> None:
        self.model_digest = model_digest

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.array(raw, dtype=np.float64)

    def __reduce__(self):
        return (IdentityCalibrator, (self.model_digest,))

    def params(self) -> dict:
        return {}

    def bound_to(self, model_digest: str) -> IdentityCalibrator:
        return IdentityCalibrator(model_digest)


class IsotonicCalibrator:
    """scikit-learn's IsotonicRegression(out_of_bounds='clip') as a piecewise-linear map, blended with the raw
    score: ``(1 - tie_break) * isotonic(raw) + tie_break * raw``.

    Isotonic regression is flat on each of its plateaus, so rows the network ranked apart would share a
    probability and ROC-AUC would drop (0.004-0.007 measured). The blend makes the map strictly increasing,
    so the order of the raw scores is kept, and moves no probability by more than ``tie_break``.
    ``tie_break`` 0 is the plain isotonic map (calibrators pickled before the blend load as that).
    """

    method = "isotonic"

    def __init__(self, x: tuple[float, ...], y: tuple[float, ...], model_digest: str, tie_break: float = 0.0) -> None:
        self.x = tuple(float(v) for v in x)
        self.y = tuple(float(v) for v in y)
        self.model_digest = model_digest
        self.tie_break = float(tie_break)
        self._x = np.asarray(self.x)
        self._y = np.asarray(self.y)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        iso = np.interp(raw, self._x, self._y)
        if not self.tie_break:
            return iso
        return (1.0 - self.tie_break) * iso + self.tie_break * np.clip(raw, 0.0, 1.0)

    def __reduce__(self):
        return (IsotonicCalibrator, (self.x, self.y, self.model_digest, self.tie_break))

    def params(self) -> dict:
        return {"x": list(self.x), "y": list(self.y), "tie_break": self.tie_break}

    def bound_to(self, model_digest: str) -> IsotonicCalibrator:
        return IsotonicCalibrator(self.x, self.y, model_digest, self.tie_break)


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


class BetaCalibrator:
    """Beta calibration (Kull, Silva Filho and Flach, AISTATS 2017):
    sigmoid(a * ln(p) - b * ln(1 - p) + c), with a, b >= 0.

    Platt scaling is the special case a = b; the third parameter lets the correction differ at the two ends
    of the score range, which a sigmoid's symmetric S cannot do.
    """

    method = "beta"

    def __init__(self, a: float, b: float, c: float, model_digest: str) -> None:
        self.a = float(a)
        self.b = float(b)
        self.c = float(c)
        self.model_digest = model_digest

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        ln_p, ln_q = beta_features(np.asarray(raw, dtype=np.float64))
        z = self.a * ln_p + self.b * ln_q + self.c
        return 1.0 / (1.0 + np.exp(-z))

    def __reduce__(self):
        return (BetaCalibrator, (self.a, self.b, self.c, self.model_digest))

    def params(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c}

    def bound_to(self, model_digest: str) -> BetaCalibrator:
        return BetaCalibrator(self.a, self.b, self.c, model_digest)


def beta_features(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ln p, -ln(1 - p)), with p clipped away from 0 and 1 as for the logit."""
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p), -np.log1p(-p)


Calibrator = IdentityCalibrator | SigmoidCalibrator | BetaCalibrator | IsotonicCalibrator
_CLASSES = (IdentityCalibrator, SigmoidCalibrator, BetaCalibrator, IsotonicCalibrator)
# Calibrators pickled before the server's rooms (issue 21) name the flat module ``serving.calibration``:
# a version exported then must still load (a rollback to it, a registry cache), so both names map here.
LEGACY_MODULES = ("serving.calibration",)
_ALLOWED = {(module, cls.__name__): cls for module in (__name__, *LEGACY_MODULES) for cls in _CLASSES}
METHODS = tuple(cls.method for cls in _CLASSES)   # simplest first


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
    if not isinstance(obj, _CLASSES):
        raise IntegrityError(f"{path}: holds a {type(obj).__name__}, not a calibrator")
    return obj


def dump_calibrator(calibrator: Calibrator, path: str | Path) -> None:
    Path(path).write_bytes(pickle.dumps(calibrator, protocol=4))
