"""Which model a command acts on, and the inputs checked before Prefect starts.

``choose_model`` is the one rule every command that names a model follows (``--model``, ``--config``):

    --config PATH (or $PIPELINE_CONFIG)   that file, its model_name unless --model names another
    --model NAME, no config               NAME, with the config its last release recorded on the registered
                                          model (``PIPELINE_CONFIG_TAG``) when the file still exists, else
                                          the defaults (configs/pipeline.yaml) with model_name NAME
    neither                               the only registered model; else one line naming them

A model that is not registered, or a version it does not have, is a ``RegistryError`` naming what is
there (the CLI prints it as one line, exit 2). Light at import: MLflow loads when a model is chosen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ConfigError, RegistryError
from tasks.settings import Settings, config_path, load_settings


@dataclass(frozen=True)
class ModelChoice:
    """The settings of the chosen model and the config file the flows should read (None: their default)."""

    settings: Settings
    config: str | None

    @property
    def model(self) -> str:
        return self.settings.model_name


def config_file(config: str | Path | None, env: dict[str, str] | None = None) -> Path:
    """The pipeline config ``load_settings`` reads for ``config``: it, else $PIPELINE_CONFIG, else the default;
    absolute, as a release records it on the registered model."""
    return config_path(config, dict(os.environ) if env is None else env).resolve()


def settings_for(config: str | Path | None, model: str | None, env: dict[str, str] | None = None) -> Settings:
    """``load_settings(config)`` with ``model`` (when given) instead of the config's model_name: how every flow
    and command reads the settings of the model it acts on."""
    return load_settings(config, env=env, overrides={"model_name": model} if model else None)


def choose_model(config: Path | None, model: str | None, env: dict[str, str] | None = None) -> ModelChoice:
    """The model a command acts on (the module's rule), checked to be registered.

    Raises:
        ConfigError: the config is unreadable or invalid.
        RegistryError: no model is registered, several are and none was named, or the named one is not.
    """
    from tasks.registry import MlflowRegistry, safe_uri
    from tasks.registry.store import PIPELINE_CONFIG_TAG

    env = dict(os.environ) if env is None else env
    given = config or env.get("PIPELINE_CONFIG")
    settings = settings_for(given, model, env)
    models = MlflowRegistry(settings).registered_models()
    where = f"MLflow at {safe_uri(settings.tracking_uri)}"
    if given:
        _require(settings.model_name, models, where, "--model" if model else f"model_name in {given}")
        return ModelChoice(settings, str(given))
    if model is None:
        if not models:
            raise RegistryError(f"{where} has no registered model yet: release one first (python -m flows release "
                                "…), or name its config with --config")
        if len(models) > 1:
            raise RegistryError(f"{where} has {len(models)} registered models ({', '.join(sorted(models))}); "
                                "name one with --model")
        (model,) = models
    _require(model, models, where, "--model")
    recorded = models[model].get(PIPELINE_CONFIG_TAG)
    if recorded and Path(recorded).is_file():
        return ModelChoice(settings_for(recorded, model, env), recorded)
    return ModelChoice(settings_for(None, model, env), None)


def _require(name: str, models: dict, where: str, source: str) -> None:
    if name not in models:
        known = ", ".join(sorted(models)) or "none yet"
        raise RegistryError(f"{source}: {where} has no model '{name}'; registered models: {known}")


def check_version(settings: Settings, version: str | None) -> None:
    """A named version exists (else a RegistryError naming the versions there are)."""
    if version is not None:
        from tasks.registry import MlflowRegistry

        MlflowRegistry(settings).get_version(version)


def check_targets(settings: Settings, targets_file: Path | None, targets: list[str] | None,
                  fleet: str | None = None) -> list[str]:
    """The inventory reads and names every target (or the fleet) asked for; returns the targets' names (a
    fleet's, in its order). Raises ConfigError naming the unknown ones and the known."""
    from tasks.deploy.fleets import inventory_path, load_fleet
    from tasks.deploy.targets import load_targets, pick_targets

    if fleet:
        _group, members = load_fleet(targets_file, settings.pipeline_home, fleet)
        return [t.name for t in members]
    inventory = load_targets(targets_file, settings.pipeline_home)
    return [t.name for t in pick_targets(inventory, targets, str(inventory_path(targets_file)))] if targets \
        else list(inventory)


def check_file(option: str, path: str | Path, what: str) -> None:
    """A local input file exists (s3:// URIs are checked where they are read)."""
    if not str(path).startswith("s3://") and not Path(path).is_file():
        raise ConfigError(f"{option} {path}: no such file ({what})")
