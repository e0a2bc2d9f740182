"""The peer for bench/bench_serving.py: our exported version served by KServe's Python ModelServer.

Written the way a KServe user would serve it: a ``kserve.Model`` that loads the SavedModel's
``serving_default`` function (one tensor per feature) and the version's calibrator, and answers the
v1 protocol, ``POST /v1/models/NAME:predict`` with ``{"instances": [{"feature": value, ...}, ...]}``,
with ``{"predictions": [probability, ...]}``. No input checks beyond what numpy and TensorFlow refuse.

The calibrator is applied by importing ``serving.contract.calibration`` (the bench puts the repository root on
PYTHONPATH): that module needs numpy only, checks the file's SHA-256 and unpickles through its
allow-list, as our server does. Runs in bench/.venv-kserve (kserve, tensorflow-cpu, numpy).

Usage: python bench/kserve_model.py --model_name NAME --version_dir DIR --http_port PORT [KServe's flags]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import kserve
import numpy as np
import tensorflow as tf

from serving.contract.calibration import load_calibrator


class TabularModel(kserve.Model):
    def __init__(self, name: str, version_dir: Path) -> None:
        super().__init__(name)
        self.version_dir = version_dir
        self.load()

    def load(self) -> bool:
        meta = json.loads((self.version_dir / "metadata.json").read_text())
        self.calibrator = load_calibrator(self.version_dir / "calibrator.pkl", meta["files"]["calibrator.pkl"])
        self.saved = tf.saved_model.load(str(self.version_dir / "saved_model"))
        self.fn = self.saved.signatures["serving_default"]
        dtypes = {name: spec.dtype for name, spec in self.fn.structured_input_signature[1].items()}
        # feature name in the JSON rows -> (tensor name, dtype): the export names each input tensor after its
        # feature, characters outside [A-Za-z0-9_] replaced by "_" and "f_" in front of a leading non-letter
        self.inputs = []
        for item in meta["inputs"]:
            tensor = re.sub(r"[^A-Za-z0-9_]", "_", item["name"])
            tensor = tensor if tensor[:1].isalpha() else f"f_{tensor}"
            self.inputs.append((item["name"], tensor, dtypes[tensor]))
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        rows = payload["instances"]
        feeds = {}
        for name, tensor, dtype in self.inputs:
            values = [row.get(name) for row in rows]
            if dtype == tf.string:
                feeds[tensor] = tf.constant(["" if v is None else str(v) for v in values], tf.string)
            else:
                feeds[tensor] = tf.constant(np.array(values, dtype=np.float64), dtype)
        raw = next(iter(self.fn(**feeds).values())).numpy().astype(np.float64).reshape(-1)
        return {"predictions": self.calibrator(raw).tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--version_dir", type=Path, required=True)
    parser.add_argument("--quiet", action="store_true", help="no access or trace line per request (as ours)")
    args, _ = parser.parse_known_args()
    server = kserve.ModelServer()
    if args.quiet:
        for logger in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(logger).setLevel(logging.WARNING)
    server.start([TabularModel(args.model_name, args.version_dir)])
