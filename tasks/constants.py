"""Names and numbers the pipeline's stages share: one definition each.

Those the model server needs as well are defined in ``serving`` (it ships to hosts alone and
imports nothing from here) and re-exported below.
"""

from __future__ import annotations

from pathlib import Path

from serving.contract.constants import GOLDEN_TOLERANCE, MANIFEST, MODEL_TYPE, VENV_TIMEOUT_S

__all__ = ["ALARM_CRITICAL", "ALARM_PAGE", "ALARM_RESOLVED", "ALARM_WARNING", "CHALLENGER", "CHAMPION", "CONFIGS",
           "CONSTRAINTS", "FEEDBACK", "GOLDEN_TOLERANCE", "HIGHER_IS_BETTER", "HOST_AGENT", "MANIFEST", "METRICS",
           "MODEL_TYPE", "ROLLED_BACK", "ROOT", "SERVING_DIR", "VENV_TIMEOUT_S"]

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SERVING_DIR = ROOT / "serving"
CONSTRAINTS = ROOT / "constraints.txt"   # the project's pins: bundled for the host's environment
# The host agent (serving/host, standard library only) as shipped: a zipapp, <base_dir>/bin/host-agent.pyz on a host.
HOST_AGENT = "host-agent.pyz"

# MLflow registry aliases (never stages) and the tag on a version the champion was rolled back from.
CHAMPION = "champion"
CHALLENGER = "challenger"
ROLLED_BACK = "rolled_back_from_to"

# Alarms are Prefect events. Only ALARM_CRITICAL triggers the rollback deployment (prefect.yaml): it
# is sent for what another model version fixes (the served champion fails its golden check). A
# critical alarm no rollback would fix (a server down, drift, latency) pages a person; a warning
# is for a person; a resolution says an alarm stopped.
ALARM_CRITICAL = "pipeline.alarm.critical"
ALARM_PAGE = "pipeline.alarm.page"
ALARM_WARNING = "pipeline.alarm.warning"
ALARM_RESOLVED = "pipeline.alarm.resolved"

# `recalibrate --labels feedback`: the labels the targets' servers collected through POST /feedback.
FEEDBACK = "feedback"

# The release metrics and which way is better.
METRICS = ("roc_auc", "pr_auc", "brier", "ece", "ece_equal_mass", "pr_auc_lift", "brier_skill", "ece_relative")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "brier": False, "ece": False, "ece_equal_mass": False,
                    "pr_auc_lift": True, "brier_skill": True, "ece_relative": False}
