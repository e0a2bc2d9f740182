"""Names and numbers the pipeline's stages share: one definition each.

Those the model server needs as well are defined in ``serving`` (it ships to hosts alone and
imports nothing from here) and re-exported below.
"""

from __future__ import annotations

from pathlib import Path

from serving.constants import GOLDEN_TOLERANCE, MODEL_TYPE
from serving.host import MANIFEST

__all__ = ["ALARM_CRITICAL", "ALARM_WARNING", "CHALLENGER", "CHAMPION", "CONFIGS", "GOLDEN_TOLERANCE",
           "HIGHER_IS_BETTER", "HOST_SCRIPT", "MANIFEST", "METRICS", "MODEL_TYPE", "ROLLED_BACK", "ROOT",
           "SERVING_DIR"]

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SERVING_DIR = ROOT / "serving"
HOST_SCRIPT = SERVING_DIR / "host.py"   # the host-side operations, standard library only

# MLflow registry aliases (never stages) and the tag on a version the champion was rolled back from.
CHAMPION = "champion"
CHALLENGER = "challenger"
ROLLED_BACK = "rolled_back_from_to"

# Alarms are Prefect events: a critical one triggers the rollback deployment (prefect.yaml);
# a warning is for a person.
ALARM_CRITICAL = "pipeline.alarm.critical"
ALARM_WARNING = "pipeline.alarm.warning"

# The release metrics and which way is better.
METRICS = ("roc_auc", "pr_auc", "brier", "ece", "ece_equal_mass")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "brier": False, "ece": False, "ece_equal_mass": False}
