"""The model registry (MLflow): what was trained, which version serves, and who moved it.

    store.py         MlflowRegistry: versions, aliases (champion, challenger), gate verdicts,
                     promotions and rollbacks with their audit tags
    runs.py          a version reserved first (its number names the export), then its run and pyfunc
    cache.py         a version's export on this machine (or downloaded, SHA-256 checked)
    links.py         tracking URIs without credentials, run links
    pyfunc_model.py  the MLflow pyfunc ("models from code") that scores through serving's loader

MLflow is imported when a registry is used, never at import.
"""

from __future__ import annotations

from tasks.registry.links import safe_uri, tracking_uri
from tasks.registry.runs import RegisteredVersion, Reservation, input_example
from tasks.registry.store import Champion, MlflowRegistry, PriorRelease

__all__ = ["Champion", "MlflowRegistry", "PriorRelease", "RegisteredVersion", "Reservation", "input_example",
           "safe_uri", "tracking_uri"]
