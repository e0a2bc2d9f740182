"""The demo dataset's generator (``data/make_demo.py``), importable without touching sys.path, and a cache
of the fold fits of the tests' demo trainings (kept in pytest's cache between sessions)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from functools import cache
from pathlib import Path

GENERATOR = Path(__file__).resolve().parent.parent / "data" / "make_demo.py"


@cache
def _module():
    spec = importlib.util.spec_from_file_location("make_demo", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_demo(n_rows: int, seed: int):
    """The demo credit-risk frame (``data/make_demo.py``'s ``make_demo``)."""
    return _module().make_demo(n_rows=n_rows, seed=seed)


def fits_key(settings, data: Path) -> str:
    """What decides a training's fold fits: the code (tasks/, serving/), the data and contract files, the
    settings, the libraries and the CPU (oneDNN's numerics follow its instruction set)."""
    import platform
    import sys

    import keras
    import numpy
    import sklearn
    import tensorflow

    root = GENERATOR.parent.parent
    digest = hashlib.sha256()
    files = [p for tree in ("tasks", "serving") for p in sorted((root / tree).rglob("*.py"))]
    for path in (*files, data, root / "configs" / "schema.yaml", root / "configs" / "feature_list.csv"):
        digest.update(f"{path.relative_to(root) if path.is_relative_to(root) else path.name}\n".encode())
        digest.update(path.read_bytes())
    cpu = next((line for line in _cpuinfo().splitlines() if line.startswith(("model name", "flags"))), "")
    for part in (settings.training.model_dump_json(), str(settings.seed), sys.version, platform.machine(), cpu,
                 tensorflow.__version__, keras.__version__, numpy.__version__, sklearn.__version__):
        digest.update(f"{part}\n".encode())
    return digest.hexdigest()[:32]


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cached_fold_runner(cache: Path, key: str, ds, schema, features):
    """A ``run_folds`` for ``tasks.training.train.train`` that keeps the fold fits (``SearchOutcome``) in
    ``cache`` under ``key`` (``fits_key``): the first session fits them as ``train`` does, one fold after
    another; a later one with the same key rebuilds the same models from them (``assemble``, as after a
    parallel training), without fitting. A file that cannot be read is fitted again."""
    from tasks.training.search import run_search
    from tasks.training.train import fit_fold

    path = cache / f"{key}.pickle"

    def run_round(candidate, folds, fold_done):
        fits = []
        for k, (tr, va) in enumerate(folds):
            fits.append(fit_fold(ds, schema, features, candidate, k, tr, va))
            fold_done(fits[-1])
        return fits

    def run_folds(settings, folds):
        try:
            return pickle.loads(path.read_bytes())
        except Exception:            # absent, truncated or from other code: fit again
            pass
        outcome = run_search(settings, folds, run_round)
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(pickle.dumps(outcome))
        partial.replace(path)
        return outcome

    return run_folds
