"""Constants the model server shares with the pipeline (``tasks.constants`` re-exports them).

They live here because ``serving`` ships to hosts on its own and imports nothing from ``tasks``.
"""

from __future__ import annotations

# The largest |Δp| allowed between a version's golden examples and what is served: checked at
# export, at every /load and by the smoke test.
GOLDEN_TOLERANCE = 1e-6

MODEL_TYPE = "TabularANN"

# A release bundle's "<sha256>  <path>" list of its other files (tasks/deploy/package.py writes it, the host
# agent checks every entry against it before anything is unpacked).
MANIFEST = "MANIFEST"

VENV_TIMEOUT_S = 1800   # a first environment build (pip install of TensorFlow) on a fresh host
