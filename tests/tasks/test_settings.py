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


def test_monitoring_thresholds_default_to_the_guide_and_errors_name_the_key(tmp_path):
    from tasks.monitoring.settings import load_monitoring

    shipped = load_monitoring()
    assert (shipped.ece.warning, shipped.ece.critical, shipped.psi.warning, shipped.psi.critical) == \
        (0.05, 0.10, 0.15, 0.25)
    assert (shipped.latency_ms.p95_warning, shipped.latency_ms.p95_critical, shipped.error_rate.critical) == \
        (100, 200, 0.01)
    bad = tmp_path / "monitoring.yaml"
    bad.write_text("psi: {warning: 0.3, critical: 0.25}\n")
    with pytest.raises(ConfigError, match="psi: .*critical .* is below warning"):
        load_monitoring(bad, env={})
    bad.write_text("lookback_minutes: 0\n")
    with pytest.raises(ConfigError, match="lookback_minutes"):
        load_monitoring(bad, env={})


def test_calibration_defaults_to_auto_and_a_bad_method_names_the_key_and_the_choices(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("model_name: m\n")
    assert load_settings(path, env={"PIPELINE_HOME": str(tmp_path)}).calibration.method == "auto"
    for method in ("none", "sigmoid", "beta", "isotonic"):
        path.write_text(f"calibration:\n  method: {method}\n")
        assert load_settings(path, env={"PIPELINE_HOME": str(tmp_path)}).calibration.method == method
    path.write_text("calibration:\n  method: platt\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: calibration\.method: .*'auto'.*'none'.*'sigmoid'.*'beta'"):
        load_settings(path, env={})


def _keys(tree: dict, prefix: str = "") -> set[str]:
    """Every leaf key of a config mapping; a mapping of metrics (bounds, max_regression) counts as one leaf."""
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("bounds", "max_regression"):
            out |= _keys(value, path + ".")
        else:
            out.add(path)
    return out


@pytest.mark.parametrize("name", ["pipeline", "monitoring"])
def test_the_shipped_configs_list_every_key_with_the_codes_default(name):
    """One source for every default: a key a config leaves out takes the value the shipped file shows."""
    from tasks.monitoring.settings import DEFAULT_MONITORING, MonitoringSettings, load_monitoring
    from tasks.settings import DEFAULT_CONFIG, Settings, read_config

    if name == "pipeline":
        path, defaults = DEFAULT_CONFIG, Settings(pipeline_home="artifacts")
        assert load_settings(path, env={}) == defaults
    else:
        path, defaults = DEFAULT_MONITORING, MonitoringSettings()
        assert load_monitoring(path, env={}) == defaults
    assert _keys(read_config(path, "config")) == _keys(defaults.model_dump(mode="json"))


def test_a_drafted_config_naming_only_the_model_inherits_the_search_and_the_gate(tmp_path):
    drafted = tmp_path / "pipeline.yaml"
    drafted.write_text("model_name: loans\n")
    settings, shipped = load_settings(drafted, env={}), load_settings(None, env={})
    assert settings.model_name == "loans" and settings.training == shipped.training
    assert settings.training.search.enabled and len(settings.training.search.candidates) == 5
    assert settings.gate == shipped.gate and "pr_auc_lift" in settings.gate.bounds
