"""Constants the model server shares with the pipeline (``tasks.constants`` re-exports them).

They live here because ``serving`` ships to hosts on its own and imports nothing from ``tasks``.
"""

from __future__ import annotations

# The largest |Δp| allowed between a version's golden examples and what is served: checked at
# export, at every /load and by the smoke test.
GOLDEN_TOLERANCE = 1e-6

MODEL_TYPE = "TabularANN"
