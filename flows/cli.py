"""``python -m flows``: the pipeline's command line.

Light at import: Prefect, TensorFlow and MLflow load only when a command runs,
so ``--help`` is instant. User errors print a message and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_GATE_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Release pipeline for tabular models: train → calibrate → export → register → gate.",
        epilog="State lives under $PIPELINE_HOME (default ./artifacts); MLflow under $PIPELINE_HOME/mlflow "
               "unless MLFLOW_TRACKING_URI or the config's mlflow.tracking_uri says otherwise.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infer = sub.add_parser("infer-schema", help="draft configs (schema.yaml, feature_list.csv) from a CSV")
    infer.add_argument("--data", required=True, type=Path, help="CSV with a header row")
    infer.add_argument("--target", required=True, help="the label column")
    infer.add_argument("--positive", required=True, help="the label value of the positive class")
    infer.add_argument("--out", required=True, type=Path, help="directory to write the two files to")
    infer.add_argument("--force", action="store_true", help="overwrite existing files")

    rel = sub.add_parser("release", help="train, calibrate, export, register and gate a new model version")
    rel.add_argument("--data", required=True, type=Path, help="training CSV")
    rel.add_argument("--schema", required=True, type=Path, help="schema.yaml (the data contract)")
    rel.add_argument("--feature-list", required=True, type=Path, help="feature_list.csv (preprocessing)")
    rel.add_argument("--config", type=Path, default=None, help="pipeline config (default configs/pipeline.yaml)")
    rel.add_argument("--json-out", type=Path, default=None, help="write the run summary as JSON here")

    val = sub.add_parser("validate", help="check a CSV against the data contract without training")
    val.add_argument("--data", required=True, type=Path)
    val.add_argument("--schema", required=True, type=Path)
    val.add_argument("--feature-list", type=Path, default=None)
    val.add_argument("--config", type=Path, default=None)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from serving.errors import ServingError
    from tasks.errors import ReleaseError

    return (ReleaseError, ServingError)


def cmd_infer_schema(args) -> int:
    from serving.schema import dump_feature_list, dump_schema
    from tasks.data import infer_contract

    schema_path, features_path = args.out / "schema.yaml", args.out / "feature_list.csv"
    existing = [str(p) for p in (schema_path, features_path) if p.exists()]
    if existing and not args.force:
        print(f"error: {', '.join(existing)} already exist; pass --force to overwrite", file=sys.stderr)
        return EXIT_USER_ERROR
    schema, features, notes = infer_contract(args.data, args.target, args.positive)
    args.out.mkdir(parents=True, exist_ok=True)
    dump_schema(schema, schema_path)
    dump_feature_list(features, features_path)
    print(f"wrote {schema_path} ({len(schema.columns)} columns) and {features_path} ({len(features.features)} "
          "features)")
    for note in notes:
        print(f"note: {note}")
    print("review both: ranges are the observed ones; widen them to what production may send")
    return 0


def _load_inputs(args):
    from serving.schema import load_feature_list, load_schema
    from tasks.data import load_dataset
    from tasks.settings import load_settings

    settings = load_settings(args.config)
    schema = load_schema(args.schema)
    if args.feature_list is not None:
        load_feature_list(args.feature_list).check_against(schema, str(args.feature_list))
    ds = load_dataset(args.data, schema, settings.training.min_rows, settings.training.min_class_rows)
    return settings, ds


def cmd_validate(args) -> int:
    _settings, ds = _load_inputs(args)
    print(f"{args.data}: {ds.n_rows} rows, {ds.positives} positive; conforms to {args.schema}")
    return 0


def cmd_release(args) -> int:
    _load_inputs(args)  # fail fast, before Prefect starts, on bad input
    from flows.release import release_flow

    summary = release_flow(data=str(args.data), schema=str(args.schema), feature_list=str(args.feature_list),
                           config=str(args.config) if args.config else None)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=2))
    gate = summary["gate"]
    print()
    print(f"model version {summary['version']} (release {summary['release']}) exported to {summary['model_dir']}")
    print(f"registered as {summary['registry']['name']} version {summary['registry']['version']} in MLflow "
          f"(run {summary['registry']['run_id']})")
    m = summary["cv_metrics"]
    print(f"cv: roc_auc {m['roc_auc']:.4f}  pr_auc {m['pr_auc']:.4f}  brier {m['brier']:.4f}  ece {m['ece']:.4f} "
          f"(before calibration {summary['calibration']['ece_before']:.4f})")
    if gate["passed"]:
        print(f"quality gate: passed; alias '{summary['registry']['alias']}' now points at it")
        return 0
    print("quality gate: FAILED", file=sys.stderr)
    for reason in gate["reasons"]:
        print(f"  - {reason}", file=sys.stderr)
    return EXIT_GATE_FAILED


COMMANDS = {"infer-schema": cmd_infer_schema, "release": cmd_release, "validate": cmd_validate}


def _prefect_defaults(env: dict[str, str]) -> None:
    """Keep Prefect's state under the pipeline home too, before anything imports Prefect."""
    home = Path(env.get("PIPELINE_HOME") or "artifacts").resolve()
    if not env.get("PREFECT_HOME"):
        env["PREFECT_HOME"] = str(home / "prefect")
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # The temporary server migrates its database on first start; 2 slow cores need more than 20 s.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF 2.21 logs harmless tf.data attribute errors


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _prefect_defaults(os.environ)
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
