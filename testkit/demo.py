"""The demo dataset's generator (``data/make_demo.py``), importable without touching sys.path."""

from __future__ import annotations

import importlib.util
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
