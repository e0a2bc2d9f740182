"""Shared fixtures: isolated homes, a tiny demo dataset and a fast training config."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Never touch the user's ~/.prefect: every test session gets its own Prefect home.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PIPELINE_HOME", None)

FAST_CONFIG = """
model_name: test-model
seed: 7
training:
  cv_folds: 3
  epochs: 12
  batch_size: 128
  hidden_units: [16]
  early_stopping_patience: 3
  min_rows: 50
  intra_op_threads: 2
  inter_op_threads: 1
export:
  golden_examples: 12
gate:
  bounds:
    roc_auc: {min: 0.6}
    pr_auc: {min: 0.2}
    brier: {max: 0.25}
    ece: {max: 0.1}
"""


@pytest.fixture(scope="session")
def demo_frame():
    from make_demo import make_demo

    return make_demo(n_rows=900, seed=11)


@pytest.fixture
def demo_csv(tmp_path, demo_frame) -> Path:
    path = tmp_path / "demo.csv"
    demo_frame.to_csv(path, index=False)
    return path


@pytest.fixture
def schema_path() -> Path:
    return ROOT / "configs" / "schema.yaml"


@pytest.fixture
def feature_list_path() -> Path:
    return ROOT / "configs" / "feature_list.csv"


@pytest.fixture
def fast_config(tmp_path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(FAST_CONFIG)
    return path


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(fast_config, home):
    from tasks.settings import load_settings

    return load_settings(fast_config, env={"PIPELINE_HOME": str(home)})


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect server (SQLite) for flow runs in this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
