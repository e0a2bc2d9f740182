"""Loading one exported version and scoring rows with it.

Order matters for safety: metadata.json is parsed (JSON only) and checked against
the hash the registry or the release bundle recorded for it and against its own schema
hashes, every file's SHA-256 is checked against it, the calibrator is unpickled through an allow-list
and must name the same SavedModel digest, and only then is TensorFlow asked to
load the graph.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from serving.contract.calibration import Calibrator, load_calibrator
from serving.contract.errors import IntegrityError
from serving.contract.inputs import coerce_column
from serving.contract.metadata import (
    CALIBRATOR_FILE,
    PACKED_SIGNATURE,
    SAVED_MODEL_DIR,
    SERVING_SIGNATURE,
    ModelMetadata,
    read_metadata,
    verify_files,
    verify_metadata,
)
from serving.contract.schema import ColumnSpec, schema_from_dict, tensor_name

# Imported by `import tensorflow` only if installed, and never used by the server: Keras (TensorFlow imports
# it eagerly to register its objects for Keras' own loaders; the server calls the SavedModel's signature
# functions, which need none of it) and, through Keras' scikit-learn wrapper, scikit-learn and SciPy's
# submodules. Together ~170 MB of every server process and a second of its start (bench/README.md).
NOT_NEEDED_TO_SERVE = ("keras", "sklearn")


def import_tensorflow():
    """``import tensorflow``, keeping out the optional modules it would pull in that serving never uses.

    A module name mapped to None in ``sys.modules`` makes its import raise ImportError, which TensorFlow
    and Keras catch (both treat the module as not installed). The names are released again afterwards, so
    code that imports one of them later in the same process gets the real module. A process that imported
    TensorFlow (or one of them) already is left as it is.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    blocked = [name for name in NOT_NEEDED_TO_SERVE if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        import tensorflow as tf
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return tf


class LoadedModel:
    """A verified model version: SavedModel serving function plus calibrator."""

    def __init__(self, version_dir: Path, metadata: ModelMetadata, calibrator: Calibrator, loaded,
                 metadata_sha256: str) -> None:
        self.version_dir = version_dir
        self.metadata = metadata
        self.metadata_sha256 = metadata_sha256   # the metadata.json verified at load (a restart checks it again)
        self.calibrator = calibrator
        self._loaded = loaded  # owns the variables the signature functions read
        self._named_fn = loaded.signatures[SERVING_SIGNATURE]
        self._packed_fn = loaded.signatures.get(PACKED_SIGNATURE)
        self._numeric = [i.name for i in metadata.inputs if i.dtype != "string"]
        self._categorical = [i.name for i in metadata.inputs if i.dtype == "string"]
        schema = schema_from_dict(metadata.schema_, f"{version_dir}/metadata.json")
        self.specs: dict[str, ColumnSpec] = {i.name: schema.column(i.name) for i in metadata.inputs}

    @classmethod
    def load(cls, version_dir: str | Path, metadata_sha256: str | None = None) -> LoadedModel:
        """Verify and load a version; ``metadata_sha256``: what the registry recorded for its metadata.json."""
        version_dir = Path(version_dir)
        metadata = read_metadata(version_dir)
        metadata_sha256 = verify_metadata(version_dir, metadata, metadata_sha256)
        verify_files(version_dir, metadata)
        calibrator = load_calibrator(version_dir / CALIBRATOR_FILE, metadata.files[CALIBRATOR_FILE])
        if calibrator.model_digest != metadata.model_digest:
            raise IntegrityError(f"{version_dir}: calibrator.pkl was fitted for another SavedModel")
        if calibrator.method != metadata.calibrator_method:
            raise IntegrityError(f"{version_dir}: calibrator is {calibrator.method}, metadata says "
                                 f"{metadata.calibrator_method}")
        tf = import_tensorflow()
        loaded = tf.saved_model.load(str(version_dir / SAVED_MODEL_DIR))
        return cls(version_dir, metadata, calibrator, loaded, metadata_sha256)

    def score_columns(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw network scores and calibrated probabilities for typed columns.

        Args:
            columns: per input, float64 values (NaN = missing) or str values ("" = missing).
        """
        raw = self.raw_scores(columns)
        return raw, self.calibrator(raw)

    def raw_scores(self, columns: Mapping[str, np.ndarray], named: bool = False) -> np.ndarray:
        """The network's scores through the packed endpoint, or ``named=True``: one tensor per feature."""
        import tensorflow as tf

        if self._packed_fn is not None and not named:
            n = len(next(iter(columns.values())))
            numbers = np.empty((n, len(self._numeric)), dtype=np.float64)
            for i, name in enumerate(self._numeric):
                numbers[:, i] = columns[name]
            categories = np.empty((n, len(self._categorical)), dtype=object)
            for j, name in enumerate(self._categorical):
                categories[:, j] = columns[name]
            out = self._packed_fn(numbers=tf.constant(numbers), categories=tf.constant(categories, tf.string))
        else:
            out = self._named_fn(**self._named_feeds(columns))
        return next(iter(out.values())).numpy().astype(np.float64).reshape(-1)

    def _named_feeds(self, columns: Mapping[str, np.ndarray]) -> dict:
        import tensorflow as tf

        feeds = {}
        for spec in self.metadata.inputs:
            values = columns[spec.name]
            dtype = tf.string if spec.dtype == "string" else tf.float64
            values = values.astype(object) if spec.dtype == "string" else values
            feeds[tensor_name(spec.name)] = tf.constant(values, dtype)
        return feeds

    def score_rows(self, rows: Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray]:
        """Score raw rows (dicts of feature name to JSON-like value); no contract checks."""
        columns = {name: coerce_column(spec, [r.get(name) for r in rows]).values
                   for name, spec in self.specs.items()}
        return self.score_columns(columns)

    def golden_max_error(self) -> float:
        """Largest |Δp| between this process's predictions and the golden examples."""
        golden = self.metadata.golden_examples
        if not golden:
            raise IntegrityError(f"{self.version_dir}: metadata.json has no golden examples")
        _raw, prob = self.score_rows([g.features for g in golden])
        expected = np.asarray([g.probability for g in golden])
        return float(np.max(np.abs(prob - expected)))
