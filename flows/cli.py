"""``python -m flows`` (installed as ``tabular-pipeline``): the pipeline's command line.

One command line: an option means the same on every command that has it, and every option has help
(tests/flows/test_cli.py walks the parser). Light at import: Prefect, TensorFlow and MLflow load only
when a command runs, so ``--help`` is instant; the inputs are checked before Prefect starts, and a user
error is one line on stderr (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.commands import (
    EXIT_BUSY,
    EXIT_USER_ERROR,
    cmd_backup,
    cmd_infer_schema,
    cmd_recalibrate,
    cmd_release,
    cmd_restore,
    cmd_validate,
    user_errors,
)
from flows.commands_serving import (
    cmd_balancer,
    cmd_deploy,
    cmd_monitor,
    cmd_rollback,
    cmd_status,
    cmd_stop,
    cmd_watch,
)
from flows.output import configure_output
from flows.score_command import add_score_command, cmd_score

PROG = "python -m flows"
EXIT_CODES = """exit codes:
  0  done
  2  bad input (one line on stderr)
  3  a gate refused the candidate
  4  status: a target serves something other than the champion
  5  monitor: a critical alarm fires (watch with --rounds or --for-s: at its last round)
  6  another run held the model's lock too long"""
# A string, not a Path: Path("s3://b/k") is "s3:/b/k".
DATA_HELP = ("training data: a CSV with a header row or a Parquet file (.parquet/.pq), a path or s3://bucket/key "
             "(credentials and endpoint from the AWS environment: AWS_PROFILE or AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL)")
MODEL_HELP = ("the registered model (default: the config's model_name when --config or $PIPELINE_CONFIG gives one, "
              "else the only registered model)")
VERSION_HELP = "a registered version number of the model, e.g. 3 (default: {})"
TARGETS_FILE_HELP = "target inventory (default configs/targets.yaml or $PIPELINE_TARGETS)"
FLEET_HELP = "every host of this fleet of the inventory, by the fleet's strategy (instead of --target)"

COMMANDS = {"infer-schema": cmd_infer_schema, "validate": cmd_validate, "release": cmd_release,
            "recalibrate": cmd_recalibrate, "deploy": cmd_deploy, "rollback": cmd_rollback, "status": cmd_status,
            "stop": cmd_stop, "monitor": cmd_monitor, "watch": cmd_watch, "balancer": cmd_balancer,
            "backup": cmd_backup, "restore": cmd_restore, "score": cmd_score}
LOCAL_ONLY = ("backup", "restore")   # read or write a home's files only: no Prefect home is made


def version_number(text: str) -> str:
    """``--version``: a registered version number (MLflow numbers them 1, 2, 3…)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a registered version number (1, 2, 3…)")
    return str(int(text))


def positive_int(text: str) -> int:
    """``--rounds``: a whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def positive_seconds(text: str) -> float:
    """``--for-s``: seconds, more than 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _command(sub, name: str, summary: str, *, json_out: bool = True) -> argparse.ArgumentParser:
    """A command with the options every command has: --config, --verbose (and --json-out where it does work)."""
    p = sub.add_parser(name, help=summary, description=summary, epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, metavar="PATH",
                   help="pipeline config (default configs/pipeline.yaml or $PIPELINE_CONFIG)")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow/absl/oneDNN, alembic and build-backend lines (hidden by default)")
    if json_out:
        p.add_argument("--json-out", type=Path, default=None, metavar="PATH",
                       help="write the command's result as JSON to this file")
    return p


def _targets(p: argparse.ArgumentParser, what: str, default: str = "local", fleet: bool = False) -> None:
    p.add_argument("--target", action="append", dest="targets", metavar="NAME",
                   help=f"{what} (repeatable; default: {default})")
    p.add_argument("--targets", dest="targets_file", type=Path, default=None, metavar="PATH", help=TARGETS_FILE_HELP)
    if fleet:
        p.add_argument("--fleet", default=None, metavar="NAME", help=FLEET_HELP)


def _monitoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--monitoring", type=Path, default=None, metavar="PATH",
                   help="alarm thresholds (default configs/monitoring.yaml or $PIPELINE_MONITORING)")


def _model(p: argparse.ArgumentParser, help_text: str = MODEL_HELP) -> None:
    p.add_argument("--model", default=None, metavar="NAME", help=help_text)


def _version(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--version", type=version_number, default=None, metavar="N", help=VERSION_HELP.format(default))


def _contract(p: argparse.ArgumentParser, feature_list_required: bool) -> None:
    p.add_argument("--data", required=True, metavar="FILE|URI", help=DATA_HELP)
    p.add_argument("--schema", required=True, type=Path, metavar="PATH", help="schema.yaml (the data contract)")
    p.add_argument("--feature-list", required=feature_list_required, type=Path, default=None, metavar="PATH",
                   help="feature_list.csv (the preprocessing), checked against the schema")


def _make_commands(sub) -> None:
    infer = _command(sub, "infer-schema", "draft configs (schema.yaml, feature_list.csv, pipeline.yaml) from a "
                                          "data file, and print the release command that uses them")
    infer.add_argument("--data", required=True, metavar="FILE|URI", help=DATA_HELP)
    infer.add_argument("--target", required=True, metavar="COLUMN", help="the label column (of the data)")
    infer.add_argument("--positive", required=True, metavar="VALUE", help="the label value of the positive class")
    infer.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write the three files to")
    infer.add_argument("--name", metavar="NAME",
                       help="the model's registered name (default: from the data file's name)")
    infer.add_argument("--force", action="store_true", help="overwrite existing files")

    val = _command(sub, "validate", "check a data file against the data contract without training")
    _contract(val, feature_list_required=False)

    rel = _command(sub, "release", "train, calibrate, export, register and gate a new model version; deploy it "
                                   "when blessed")
    _contract(rel, feature_list_required=True)
    rel.add_argument("--eval-data", default=None, metavar="FILE|URI",
                     help="rows (same contract; CSV or Parquet, a path or an s3:// URI) the candidate and the champion "
                          "are both scored on for the gate's comparison (default: the most recent rows when the "
                          "schema names a time_column)")
    _model(rel, "the registered model's name (default: the config's model_name)")
    _targets(rel, "deploy a blessed version to this target", fleet=True)
    rel.add_argument("--no-deploy", action="store_true", help="stop after the quality gate")

    rcal = _command(sub, "recalibrate", "refit a version's calibrator on recent labels: a PATCH release on the same "
                                        "network, gated on held-out labels, then deployed")
    _model(rcal)
    _version(rcal, "the champion")
    rcal.add_argument("--labels", required=True, metavar="FILE|feedback",
                      help="a labels CSV in the version's schema (an optional scored_at column orders it in time), "
                           "or 'feedback': the labels the targets' servers collected through POST /feedback")
    _targets(rcal, "read feedback from and deploy a blessed recalibration to this target")
    rcal.add_argument("--no-deploy", action="store_true", help="stop after the gate")

    dep = _command(sub, "deploy", "deploy a registered version to targets, smoke-test, promote to champion")
    _model(dep)
    _version(dep, "the challenger, else the latest blessed version")
    _targets(dep, "deploy to this target", fleet=True)

    rb = _command(sub, "rollback", "serve the previous champion again and move the alias back")
    _model(rb)
    _version(rb, "the champion's recorded previous champion")
    rb.add_argument("--to-version", type=version_number, dest="version", help=argparse.SUPPRESS)  # the old name
    _targets(rb, "roll this target back", fleet=True)

    st = _command(sub, "status", "the registry's champion next to what each target serves (exit 4 on a difference)")
    _model(st)
    _targets(st, "show this target", fleet=True)

    sp = _command(sub, "stop", "stop the server a target runs")
    _targets(sp, "stop this target's server")

    mon = _command(sub, "monitor", "judge each target's live traffic against configs/monitoring.yaml; send the "
                                   "alarms that changed (exit 5 while a critical alarm fires)")
    _model(mon)
    _monitoring(mon)
    _targets(mon, "watch this target", default="every target in the inventory", fleet=True)

    wat = _command(sub, "watch", "the health watcher: every target's /health every health_interval_s (30 s); pages "
                                 "(alarm liveness) when a deployed server is down, resolves when it answers again; "
                                 "runs until SIGTERM (the ml-pipeline-health-watcher unit)")
    _monitoring(wat)
    _targets(wat, "watch this target", default="every target in the inventory", fleet=True)
    wat.add_argument("--rounds", type=positive_int, default=None, metavar="N", help="stop after N rounds")
    wat.add_argument("--for-s", type=positive_seconds, default=None, metavar="SECONDS",
                     help="stop once this many seconds have passed (after the round under way)")

    bal = _command(sub, "balancer", "write a fleet's nginx configuration; drain or restore a host (reloads nginx "
                                    "and waits until the new configuration is in effect)")
    bal.add_argument("--fleet", required=True, metavar="NAME", help="the fleet (the inventory's fleets: section)")
    bal.add_argument("--targets", dest="targets_file", type=Path, default=None, metavar="PATH", help=TARGETS_FILE_HELP)
    bal.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="write the configuration into this directory instead of the fleet's config_dir (no reload)")
    bal.add_argument("--drain", action="append", default=[], metavar="TARGET", help="take a host out of rotation")
    bal.add_argument("--undrain", action="append", default=[], metavar="TARGET", help="put a host back into rotation")


def _backup_commands(sub) -> None:
    bk = _command(sub, "backup", "write one archive (.tar.gz, with a SHA-256 manifest) of the pipeline home: the "
                                 "registry through SQLite's online backup, exports, bundles, alarms, hosts' state")
    bk.add_argument("--out", required=True, type=Path, metavar="FILE", help="the archive to write (e.g. home.tar.gz)")
    bk.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    rs = _command(sub, "restore", "verify an archive written by backup (every SHA-256, no path outside --home), "
                                  "then restore it as a pipeline home")
    rs.add_argument("--from", required=True, type=Path, dest="archive", metavar="FILE", help="the archive to restore")
    rs.add_argument("--home", required=True, type=Path, metavar="DIR",
                    help="the pipeline home to create (a new or empty directory)")
    rs.add_argument("--force", action="store_true", help="replace DIR even when it is a live pipeline home")


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The whole command line (the reference page docs/reference/cli.md is generated from it)."""
    top = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Release pipeline for tabular models: train → calibrate → export → register → gate → deploy.",
        epilog="State lives under $PIPELINE_HOME (default ./artifacts); MLflow under $PIPELINE_HOME/mlflow "
               "unless MLFLOW_TRACKING_URI or the config's mlflow.tracking_uri says otherwise.\n\n" + EXIT_CODES)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _make_commands(sub)
    add_score_command(lambda name, summary: _command(sub, name, summary), _model, _monitoring)
    _backup_commands(sub)
    return top


def _prefect_defaults(env: dict[str, str]) -> None:
    """Keep Prefect's state under the pipeline home too, before anything imports Prefect."""
    home = Path(env.get("PIPELINE_HOME") or "artifacts").resolve()
    if not env.get("PREFECT_HOME"):
        env["PREFECT_HOME"] = str(home / "prefect")
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # The temporary server migrates its database on first start; 2 slow cores need more than 20 s.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def conflicting_options(args: argparse.Namespace) -> str | None:
    """Options the parser accepts one by one but not together; the message, else None."""
    if getattr(args, "targets", None) and getattr(args, "fleet", None) and args.command != "balancer":
        return f"{args.command}: give --target or --fleet, not both (fleet {args.fleet} names its own targets)"
    return None


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    conflict = conflicting_options(args)
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.command not in LOCAL_ONLY:
        _prefect_defaults(os.environ)
    configure_output(getattr(args, "verbose", False), os.environ)
    from tasks.errors import LockTimeout

    try:
        return COMMANDS[args.command](args)
    except LockTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def run() -> None:
    """The console command ``tabular-pipeline`` (pyproject's ``[project.scripts]``)."""
    sys.exit(main(prog="tabular-pipeline"))
