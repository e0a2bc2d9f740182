"""`python -m flows release` as a user runs it: progress while it trains, none of the libraries' noise.

Run in a subprocess without the test session's TF_CPP_MIN_LOG_LEVEL, so that what quiets TensorFlow is
the command's own doing; its output is a pipe, so the progress comes as plain lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

NOISE = [
    re.compile(r"^[IWEF]\d{4} "),                 # TensorFlow's C++ logging (absl format)
    re.compile(r"oneDNN|cpu_feature_guard|absl::"),
    re.compile(r"alembic\.runtime|Context impl SQLiteImpl|Will assume non-transactional DDL"),
    re.compile(r"setuptools|SetuptoolsDeprecationWarning"),
    re.compile(r"mlflow\.store\.db\.utils|Creating initial MLflow database tables"),
    re.compile(r"(UserWarning|DeprecationWarning|FutureWarning):"),
]


def _env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", "MLFLOW_LOGGING_LEVEL", "PREFECT_API_URL",
                        "PREFECT_HOME", "MLFLOW_TRACKING_URI")}
    return {**env, "PIPELINE_HOME": str(home)}


def _noise(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(p.search(line) for p in NOISE)]


def test_a_release_shows_each_fold_with_time_left_and_no_library_noise(demo_csv, schema_path, feature_list_path,
                                                                       fast_config, home):
    result = subprocess.run([sys.executable, "-m", "flows", "release", "--data", str(demo_csv), "--schema",
                             str(schema_path), "--feature-list", str(feature_list_path), "--config",
                             str(fast_config), "--no-deploy"],
                            cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    folds = re.findall(r"fold (\d)/3 · \d+:\d\d elapsed( · ~\d+:\d\d left)?", output)
    assert [k for k, _left in folds] == ["1", "2", "3"], output[-3000:]
    assert all(left for _k, left in folds[:2]) and not folds[2][1]     # the last fold has nothing left
    assert _noise(output) == []
    assert "quality gate: passed" in output                            # the pipeline's own lines stay


@pytest.mark.parametrize(("verbose", "shown"), [(False, False), (True, True)])
def test_tensorflows_load_time_lines_show_only_with_verbose(verbose, shown):
    """What `--verbose` switches: configure_output, then TensorFlow loading in the same process."""
    code = ("import os, sys\nfrom flows.output import configure_output\n"
            f"configure_output({verbose}, os.environ)\n"
            "import tensorflow as tf\nprint('TF_CPP_MIN_LOG_LEVEL' in os.environ, tf.constant(1).numpy())\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(not verbose), "1"]               # verbose: the variable is not forced
    assert ("oneDNN custom operations are on" in result.stderr) is shown
    if not verbose:
        assert _noise(result.stderr) == []
