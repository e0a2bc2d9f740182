"""One command line (flows/cli.py): the parser walked option by option, the model each command acts on
(flows/models.py) against a real MLflow SQLite registry, and the errors a person sees before Prefect starts."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

WORKING = ("release", "recalibrate", "deploy", "rollback", "status", "stop", "monitor", "watch", "validate",
           "infer-schema", "balancer", "backup", "restore", "score")
WITH_TARGETS = ("release", "recalibrate", "deploy", "rollback", "status", "stop", "monitor", "watch")
WITH_FLEET = ("release", "deploy", "rollback", "status", "monitor", "watch")
WITH_MODEL = ("release", "recalibrate", "deploy", "rollback", "status", "monitor")
WITH_VERSION = ("recalibrate", "deploy", "rollback")
# Enough of each command's required options to parse; the fleet/target check comes before anything is read.
REQUIRED = {"release": ["--data", "d.csv", "--schema", "s.yaml", "--feature-list", "f.csv"],
            "recalibrate": ["--labels", "l.csv"]}


def _commands() -> dict[str, argparse.ArgumentParser]:
    from flows.cli import parser

    (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(command: str) -> dict[str, argparse.Action]:
    return {flag: action for action in _commands()[command]._actions for flag in action.option_strings}


def test_the_parser_has_every_command_of_the_spec():
    assert set(_commands()) == set(WORKING)


@pytest.mark.parametrize("command", WORKING)
def test_every_option_has_help_and_every_command_config_verbose_and_json_out(command):
    options = _options(command)
    hidden = {"--to-version"}           # rollback's old name for --version, accepted, not shown
    for flag, action in options.items():
        assert flag in hidden or (action.help and action.help != argparse.SUPPRESS), (command, flag)
    assert {"--config", "--verbose", "--json-out"} <= set(options)
    assert options["--json-out"].type is options["--config"].type


@pytest.mark.parametrize("command", WITH_TARGETS)
def test_target_is_repeatable_with_an_inventory_beside_it(command):
    options = _options(command)
    assert isinstance(options["--target"], argparse._AppendAction) and options["--target"].dest == "targets"
    assert options["--targets"].dest == "targets_file"
    assert ("--fleet" in options) == (command in WITH_FLEET)
    assert ("--model" in options) == (command in WITH_MODEL)


def test_version_is_one_option_alike_on_every_command_and_refuses_what_is_no_version_number():
    from flows.cli import parser, version_number

    actions = [_options(c)["--version"] for c in WITH_VERSION]
    assert {a.type for a in actions} == {version_number} and {a.dest for a in actions} == {"version"}
    assert len({a.help.split(" (default")[0] for a in actions}) == 1
    assert parser().parse_args(["rollback", "--to-version", "2"]).version == "2"    # the old name still works
    assert parser().parse_args(["deploy", "--version", "03"]).version == "3"
    with pytest.raises(SystemExit) as refused:
        parser().parse_args(["deploy", "--version", "latest"])
    assert refused.value.code == 2


@pytest.mark.parametrize("command", [None, *WORKING])
def test_the_exit_codes_end_every_help(command):
    from flows.cli import EXIT_CODES, parser

    text = (parser() if command is None else _commands()[command]).format_help()
    assert text.rstrip().endswith(EXIT_CODES)
    for code in ("0  done", "2  bad input", "3  a gate refused", "4  status:", "5  monitor:", "6  another run"):
        assert code in text


def test_fleet_with_target_is_refused_on_every_command_before_prefect_loads():
    """One line, exit 2, and neither Prefect nor MLflow imported: nothing was started to say no."""
    script = ("import sys, json\nfrom flows.cli import main\nout = {}\n"
              f"for command in {list(WITH_FLEET)!r}:\n"
              f"    argv = [command, *{REQUIRED!r}.get(command, []), '--fleet', 'web', '--target', 't1']\n"
              "    out[command] = main(argv)\n"
              "out['loaded'] = sorted(m for m in ('prefect', 'mlflow', 'tensorflow') if m in sys.modules)\n"
              "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout)
    assert result.pop("loaded") == []
    assert result == dict.fromkeys(WITH_FLEET, 2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(WITH_FLEET) and all("give --target or --fleet, not both" in ln for ln in lines)


def test_help_is_light():
    script = ("import sys\nfrom flows.cli import main\ntry:\n    main(['deploy', '--help'])\nexcept SystemExit:\n"
              "    pass\nprint(sorted(m for m in ('prefect', 'mlflow', 'tensorflow', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().endswith("[]") and "--model NAME" in done.stdout


def test_the_console_command_is_declared_and_runs_main(monkeypatch):
    from flows import cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tabular-pipeline": "flows.cli:run"}
    module, _, name = scripts["tabular-pipeline"].partition(":")
    entry = getattr(__import__(module, fromlist=[name]), name)
    monkeypatch.setattr(sys, "argv", ["tabular-pipeline", "status", "--fleet", "web", "--target", "t1"])
    with pytest.raises(SystemExit) as ended:
        entry()
    assert entry is cli.run and ended.value.code == 2


def test_infer_schema_prints_the_exact_release_command(tmp_path, demo_csv, home, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("PIPELINE_HOME", str(home))
    out = tmp_path / "my cfg"
    assert main(["infer-schema", "--data", str(demo_csv), "--target", "default", "--positive", "1", "--out",
                 str(out), "--json-out", str(tmp_path / "drafted.json")]) == 0
    expected = (f"python -m flows release --data {demo_csv} --schema '{out}/schema.yaml' --feature-list "
                f"'{out}/feature_list.csv' --config '{out}/pipeline.yaml'")
    assert capsys.readouterr().out.rstrip().endswith(f"then release it:\n  {expected}")
    assert json.loads((tmp_path / "drafted.json").read_text())["next_command"] == expected


# ---------------------------------------------------------------- which model: a real SQLite registry

@pytest.fixture
def registry(home, monkeypatch, migrated_mlflow_store):
    """A pipeline home's MLflow SQLite registry; ``add(name, versions, config=None)`` registers a model with
    that many versions (no training: the versions point at an empty directory) and a recorded config."""
    from tasks.registry import MlflowRegistry
    from tasks.registry.store import PIPELINE_CONFIG_TAG
    from tasks.settings import load_settings

    monkeypatch.setenv("PIPELINE_HOME", str(home))
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    migrated_mlflow_store(home)
    client = MlflowRegistry(load_settings(None)).client

    def add(name: str, versions: int = 1, config=None) -> None:
        client.create_registered_model(name, tags={PIPELINE_CONFIG_TAG: str(config)} if config else None)
        for _ in range(versions):
            client.create_model_version(name, source=(home / "model").as_uri())
    return add


def _run(capsys, *argv) -> tuple[int, list[str]]:
    from flows.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def test_no_registered_model_says_so_and_how_to_name_one(registry, capsys):
    from flows.models import choose_model
    from tasks.errors import RegistryError

    with pytest.raises(RegistryError, match="has no registered model yet: release one first"):
        choose_model(None, None)
    code, err = _run(capsys, "status")
    assert code == 2 and len(err) == 1 and "--config" in err[0]


def test_the_only_registered_model_is_chosen_with_the_config_its_release_recorded(registry, tmp_path, fast_config):
    from flows.models import choose_model

    recorded = tmp_path / "cfg" / "pipeline.yaml"
    recorded.parent.mkdir()
    recorded.write_text(fast_config.read_text().replace("model_name: test-model", "model_name: loans") +
                        "lock_timeout_s: 5\n")
    registry("loans", config=recorded)
    chosen = choose_model(None, None)
    assert (chosen.model, chosen.config, chosen.settings.lock_timeout_s) == ("loans", str(recorded), 5)
    recorded.unlink()     # moved away: the defaults, with the model's name
    chosen = choose_model(None, None)
    assert (chosen.model, chosen.config, chosen.settings.lock_timeout_s) == ("loans", None, 3600)


def test_two_registered_models_need_model_and_an_unknown_one_is_named_with_those_there_are(registry, capsys):
    from flows.models import choose_model

    registry("loans")
    registry("churn")
    code, err = _run(capsys, "deploy")
    assert code == 2 and err == [f"error: MLflow at {_where()} has 2 registered models (churn, loans); name one "
                                 "with --model"]
    assert choose_model(None, "churn").model == "churn"
    code, err = _run(capsys, "rollback", "--model", "fraud")
    assert code == 2 and err == [f"error: --model: MLflow at {_where()} has no model 'fraud'; registered models: "
                                 "churn, loans"]


def _where() -> str:
    from tasks.registry import safe_uri
    from tasks.settings import load_settings

    return safe_uri(load_settings(None).tracking_uri)


def test_the_config_names_the_model_and_model_overrides_it(registry, fast_config, capsys):
    from flows.models import choose_model

    registry("test-model")
    chosen = choose_model(fast_config, None)
    assert (chosen.model, chosen.config) == ("test-model", str(fast_config))
    code, err = _run(capsys, "monitor", "--config", str(fast_config), "--model", "loans")
    assert code == 2 and len(err) == 1 and "no model 'loans'; registered models: test-model" in err[0]


def test_a_version_that_does_not_exist_is_one_line_naming_the_versions(registry, tmp_path, capsys):
    """The issue's case: a release with --config recorded it, so recalibrate --version needs no --config; a
    version the model does not have says which it has, before Prefect starts."""
    labels = tmp_path / "labels.csv"
    labels.write_text("default\n1\n")
    registry("credit-risk", versions=2)
    for argv in (["recalibrate", "--labels", str(labels)], ["deploy"], ["rollback"]):
        code, err = _run(capsys, *argv, "--version", "7")
        assert code == 2 and err == [f"error: MLflow at {_where()}: 'credit-risk' has no version 7; its versions: "
                                     "1, 2"], argv
    code, err = _run(capsys, "recalibrate", "--labels", str(tmp_path / "gone.csv"), "--version", "1")
    assert code == 2 and err == [f"error: --labels {tmp_path / 'gone.csv'}: no such file (a labels CSV, or "
                                 "'feedback')"]


def test_unknown_targets_and_fleets_are_refused_before_prefect_starts(registry, tmp_path, capsys):
    inventory = tmp_path / "targets.yaml"
    inventory.write_text("targets:\n  t1:\n    base_dir: t1\n")
    registry("credit-risk")
    code, err = _run(capsys, "deploy", "--target", "t9", "--targets", str(inventory))
    assert code == 2 and err == [f"error: {inventory}: unknown target(s) ['t9']; known: ['t1']"]
    code, err = _run(capsys, "rollback", "--fleet", "web", "--targets", str(inventory))
    assert code == 2 and len(err) == 1 and "unknown fleet 'web'" in err[0]


def test_status_writes_its_result_as_json(registry, tmp_path, capsys):
    from testkit.net import free_port

    inventory = tmp_path / "targets.yaml"
    inventory.write_text(f"targets:\n  t1:\n    base_dir: t1\n    port: {free_port()}\n")
    registry("credit-risk")
    from flows.cli import main

    code = main(["status", "--target", "t1", "--targets", str(inventory), "--json-out", str(tmp_path / "status.json")])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "status.json").read_text())
    assert code == 0 and result["model"] == "credit-risk" and result["champion"] is None
    assert result["targets"] == [{"target": "t1", "deployed": False, "running": False, "serves": None,
                                  "health": None, "in_rotation": None, "matches": True}] and result["differs"] is False
    assert "target t1: not deployed (no version released to it yet)" in printed


def test_rollback_of_several_targets_moves_the_champion_once_and_the_others_follow(registry, tmp_path, capsys,
                                                                                  monkeypatch):
    """The first target's rollback moves the alias; each other target is switched only while it serves the
    version rolled back from (the rollback flow's failing_version rule)."""
    import flows.deploy

    inventory = tmp_path / "targets.yaml"
    inventory.write_text("targets:\n  t1:\n    base_dir: t1\n  t2:\n    base_dir: t2\n    port: 8001\n")
    registry("credit-risk", versions=3)
    calls = []

    def rollback_flow(target, version=None, failing_version=None, **kw):
        calls.append((target, version, failing_version, kw["model"]))
        if failing_version is None:
            return {"champion_before": "3", "champion_after": "2", "action": "rolled back",
                    "deployment": {"version": "2"}}
        return {"champion_before": "2", "champion_after": "2", "action": "skipped"}

    monkeypatch.setattr(flows.deploy, "rollback_flow", rollback_flow)
    from flows.cli import main

    assert main(["rollback", "--target", "t1", "--target", "t2", "--targets", str(inventory)]) == 0
    assert calls == [("t1", None, None, "credit-risk"), ("t2", None, "3", "credit-risk")]
    assert capsys.readouterr().out.splitlines() == ["target t1: now serves version 2; smoke test passed",
                                                    "target t2: skipped (it does not serve version 3)",
                                                    "champion: 3 -> 2"]
