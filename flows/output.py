"""What a run shows a person: quiet by default, everything with ``--verbose``.

Called by ``flows.cli`` before anything imports TensorFlow, Prefect or MLflow.
"""

from __future__ import annotations


def configure_output(verbose: bool, env: dict[str, str]) -> None:
    """Set the environment and loggers so a normal run shows only the pipeline's own lines.

    Without ``verbose``: TensorFlow's C++ logging (oneDNN, absl, tf.data) is off.
    """
    if not verbose:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF 2.21 logs harmless tf.data attribute errors
