"""``python -m flows``: the pipeline's command line.

Light at import: Prefect, TensorFlow and MLflow load only when a command runs,
so ``--help`` is instant. User errors print a message and exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.commands import COMMANDS, EXIT_BUSY, EXIT_USER_ERROR, user_errors
from flows.output import configure_output

# A string, not a Path: Path("s3://b/k") is "s3:/b/k".
DATA_HELP = ("training data: a CSV with a header row or a Parquet file (.parquet/.pq), a path or s3://bucket/key "
             "(credentials and endpoint from the AWS environment: AWS_PROFILE or AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Release pipeline for tabular models: train → calibrate → export → register → gate.",
        epilog="State lives under $PIPELINE_HOME (default ./artifacts); MLflow under $PIPELINE_HOME/mlflow "
               "unless MLFLOW_TRACKING_URI or the config's mlflow.tracking_uri says otherwise.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infer = sub.add_parser("infer-schema",
                           help="draft configs (schema.yaml, feature_list.csv, pipeline.yaml) from a data file")
    infer.add_argument("--data", required=True, help=DATA_HELP)
    infer.add_argument("--target", required=True, help="the label column")
    infer.add_argument("--positive", required=True, help="the label value of the positive class")
    infer.add_argument("--out", required=True, type=Path, help="directory to write the two files to")
    infer.add_argument("--name", help="the model's registered name (default: from the data file's name)")
    infer.add_argument("--force", action="store_true", help="overwrite existing files")

    rel = sub.add_parser("release", help="train, calibrate, export, register and gate a new model version")
    rel.add_argument("--data", required=True, help=DATA_HELP)
    rel.add_argument("--schema", required=True, type=Path, help="schema.yaml (the data contract)")
    rel.add_argument("--feature-list", required=True, type=Path, help="feature_list.csv (preprocessing)")
    rel.add_argument("--eval-data", default=None,
                     help="rows (same contract; CSV or Parquet, a path or an s3:// URI) the candidate and the champion "
                          "are both scored on for the "
                          "gate's comparison (default: the most recent rows when the schema names a time_column)")
    rel.add_argument("--config", type=Path, default=None, help="pipeline config (default configs/pipeline.yaml)")
    rel.add_argument("--json-out", type=Path, default=None, help="write the run summary as JSON here")
    rel.add_argument("--target", action="append", dest="targets", metavar="NAME",
                     help="deploy a blessed version to this target (repeatable; default: local)")
    rel.add_argument("--targets", dest="targets_file", type=Path, default=None,
                     help="target inventory (default configs/targets.yaml)")
    rel.add_argument("--no-deploy", action="store_true", help="stop after the quality gate")
    rel.add_argument("--fleet", default=None, metavar="NAME",
                     help="release a blessed version to this fleet of the inventory by its strategy (instead of "
                          "--target)")

    rcal = sub.add_parser("recalibrate", help="refit a version's calibrator on recent labels: a PATCH release on "
                                              "the same network, gated on held-out labels, then deployed")
    rcal.add_argument("--version", default=None, help="registered version (default: the champion)")
    rcal.add_argument("--labels", required=True, metavar="FILE|feedback",
                      help="a labels CSV in the version's schema (an optional scored_at column orders it in time), "
                           "or 'feedback': the labels the targets' servers collected through POST /feedback")
    rcal.add_argument("--config", type=Path, default=None, help="pipeline config (default configs/pipeline.yaml)")
    rcal.add_argument("--json-out", type=Path, default=None, help="write the run summary as JSON here")
    rcal.add_argument("--target", action="append", dest="targets", metavar="NAME",
                      help="read feedback from and deploy a blessed recalibration to this target (repeatable; "
                           "default: local)")
    rcal.add_argument("--targets", dest="targets_file", type=Path, default=None,
                      help="target inventory (default configs/targets.yaml)")
    rcal.add_argument("--no-deploy", action="store_true", help="stop after the gate")

    dep = sub.add_parser("deploy", help="deploy a registered version to targets, smoke-test, promote to champion")
    dep.add_argument("--version", default=None, help="registered version (default: the challenger)")
    rb = sub.add_parser("rollback", help="serve the previous champion again and move the alias back")
    rb.add_argument("--to-version", "--version", dest="to_version", default=None,
                    help="registered version (default: the recorded previous one)")
    st = sub.add_parser("status", help="the registry's champion next to what each target serves")
    sp = sub.add_parser("stop", help="stop the server a target runs")
    mon = sub.add_parser("monitor", help="judge each target's live traffic against configs/monitoring.yaml; "
                                         "send the alarms that changed (exit 5 while a critical alarm fires)")
    mon.add_argument("--monitoring", type=Path, default=None,
                     help="alarm thresholds (default configs/monitoring.yaml)")
    bal = sub.add_parser("balancer", help="write a fleet's nginx configuration; drain or restore a host (reloads "
                                          "nginx and waits until the new configuration is in effect)")
    bal.add_argument("--out", type=Path, default=None,
                     help="write the configuration into this directory instead of the fleet's config_dir (no reload)")
    bal.add_argument("--drain", action="append", default=[], metavar="TARGET", help="take a host out of rotation")
    bal.add_argument("--undrain", action="append", default=[], metavar="TARGET", help="put a host back into rotation")
    for p in (dep, rb, st):
        p.add_argument("--fleet", default=None, metavar="NAME",
                       help="every host of this fleet of the inventory (by its strategy; instead of --target)")
    bal.add_argument("--fleet", required=True, metavar="NAME", help="the fleet (the inventory's fleets: section)")
    bal.add_argument("--targets", dest="targets_file", type=Path, default=None,
                     help="target inventory (default configs/targets.yaml)")
    bal.add_argument("--config", type=Path, default=None)
    for p in (dep, rb, st, sp, mon):
        many = p is not rb and p is not sp
        default = "every target in the inventory" if p is mon else "local"
        p.add_argument("--target", action="append" if many else "store", dest="targets" if many else "target",
                       metavar="NAME", default=None if many else "local",
                       help="target name" + (f" (repeatable; default: {default})" if many else " (default: local)"))
        p.add_argument("--targets", dest="targets_file", type=Path, default=None,
                       help="target inventory (default configs/targets.yaml)")
        p.add_argument("--config", type=Path, default=None)
        if p is not sp and p is not st:
            p.add_argument("--json-out", type=Path, default=None)

    val = sub.add_parser("validate", help="check a data file against the data contract without training")
    val.add_argument("--data", required=True, help=DATA_HELP)
    val.add_argument("--schema", required=True, type=Path)
    val.add_argument("--feature-list", type=Path, default=None)
    val.add_argument("--config", type=Path, default=None)
    return parser


def _prefect_defaults(env: dict[str, str]) -> None:
    """Keep Prefect's state under the pipeline home too, before anything imports Prefect."""
    home = Path(env.get("PIPELINE_HOME") or "artifacts").resolve()
    if not env.get("PREFECT_HOME"):
        env["PREFECT_HOME"] = str(home / "prefect")
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # The temporary server migrates its database on first start; 2 slow cores need more than 20 s.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
