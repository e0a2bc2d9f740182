import pytest

from tasks.errors import ConfigError
from tasks.settings import load_settings

pytestmark = pytest.mark.unit


def test_settings_overrides_and_errors_name_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("training:\ncalibration:\n  method: sigmoid\n")
    settings = load_settings(path, env={"PIPELINE_HOME": str(tmp_path)}, overrides={"training.epochs": 3})
    assert settings.training.epochs == 3 and settings.calibration.method == "sigmoid"
    assert settings.pipeline_home == tmp_path and settings.tracking_uri.startswith("sqlite:///" + str(tmp_path))
    path.write_text("training:\n  cv_folds: 1\n")
    with pytest.raises(ConfigError, match="training.cv_folds"):
        load_settings(path, env={})
    env = {"PIPELINE_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    assert load_settings(None, env=env).tracking_uri == "http://127.0.0.1:5000"
