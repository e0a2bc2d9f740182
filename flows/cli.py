"""``python -m flows``: the pipeline's command line.

Light at import: Prefect, TensorFlow and MLflow load only when a command runs,
so ``--help`` is instant. User errors print a message and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_GATE_FAILED = 3
EXIT_CRITICAL_ALARM = 5
EXIT_BUSY = 6   # another run of the model held its lock (release numbering, deploy, rollback) too long
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


def _user_errors() -> tuple[type[BaseException], ...]:
    from serving.contract.errors import ServingError
    from tasks.errors import ReleaseError

    return (ReleaseError, ServingError)


def model_name_from(data: str | Path) -> str:
    """A registered-model name proposed from a data file's name: ``Loans 2026 (EU).csv`` → ``loans-2026-eu``
    (an ``s3://bucket/key`` URI: from the key's last part)."""
    from tasks.training.sources import data_name

    stem = re.sub(r"[^a-z0-9_.]+", "-", Path(data_name(data)).stem.lower()).strip("-._")
    return stem or "model"


def cmd_infer_schema(args) -> int:
    from tasks.contract_files import dump_feature_list, dump_schema
    from tasks.settings import MODEL_NAME_PATTERN
    from tasks.training.data import infer_contract
    from tasks.training.sources import data_name

    schema_path, features_path = args.out / "schema.yaml", args.out / "feature_list.csv"
    config_path = args.out / "pipeline.yaml"
    existing = [str(p) for p in (schema_path, features_path, config_path) if p.exists()]
    if existing and not args.force:
        print(f"error: {', '.join(existing)} already exist; pass --force to overwrite", file=sys.stderr)
        return EXIT_USER_ERROR
    name = args.name or model_name_from(args.data)
    if not re.match(MODEL_NAME_PATTERN, name):
        print(f"error: --name {name!r}: a model name is letters, digits, '_', '.' and '-', starting with a letter "
              "or digit", file=sys.stderr)
        return EXIT_USER_ERROR
    schema, features, notes = infer_contract(args.data, args.target, args.positive)
    args.out.mkdir(parents=True, exist_ok=True)
    dump_schema(schema, schema_path)
    dump_feature_list(features, features_path)
    config_path.write_text(f"# Drafted by infer-schema from {data_name(args.data)}; every other setting takes its "
                           f"default (configs/pipeline.yaml lists them).\nmodel_name: {name}\n")
    origin = "" if args.name else ", from the file's name; --name to choose"
    print(f"wrote {schema_path} ({len(schema.columns)} columns), {features_path} ({len(features.features)} "
          f"features) and {config_path} (model name {name!r}{origin})")
    for note in notes:
        print(f"note: {note}")
    print("review both: ranges are the observed ones; widen them to what production may send")
    return 0


def _load_inputs(args):
    from tasks.contract_files import load_feature_list, load_schema
    from tasks.settings import load_settings
    from tasks.training.data import load_dataset

    settings = load_settings(args.config)
    schema = load_schema(args.schema)
    if args.feature_list is not None:
        load_feature_list(args.feature_list).check_against(schema, str(args.feature_list))
    ds = load_dataset(args.data, schema, settings.training.min_rows, settings.training.min_class_rows)
    if getattr(args, "eval_data", None) is not None:
        load_dataset(args.eval_data, schema, settings.gate.min_eval_rows, settings.training.min_class_rows)
    return settings, ds


def cmd_validate(args) -> int:
    _settings, ds = _load_inputs(args)
    print(f"{args.data}: {ds.n_rows} rows, {ds.positives} positive; conforms to {args.schema}")
    return 0


def cmd_release(args) -> int:
    _load_inputs(args)  # fail fast, before Prefect starts, on bad input
    from flows.release import release_flow

    fleet = None if args.no_deploy else args.fleet
    targets = [] if args.no_deploy or fleet else (args.targets or ["local"])
    summary = release_flow(data=str(args.data), schema=str(args.schema), feature_list=str(args.feature_list),
                           config=_opt(args.config), targets=targets, targets_file=_opt(args.targets_file),
                           eval_data=_opt(args.eval_data), fleet=fleet)
    _write_json(args.json_out, summary)
    print()
    print(f"model version {summary['version']} (release {summary['release']}) exported to {summary['model_dir']}")
    print(f"registered as {summary['registry']['name']} version {summary['registry']['version']} in MLflow "
          f"(run {summary['registry']['run_id']})")
    m = summary["cv_metrics"]
    print(f"cv: roc_auc {m['roc_auc']:.4f}  pr_auc {m['pr_auc']:.4f}  brier {m['brier']:.4f}  ece {m['ece']:.4f} "
          f"(before calibration {summary['calibration']['ece_before']:.4f})")
    if summary.get("evaluation"):
        rows, e = summary["evaluation"]["rows"], summary["evaluation"]["metrics"]
        print(f"shipped model on {rows['n_rows']} held-out rows ({rows['origin']}): roc_auc {e['roc_auc']:.4f}  "
              f"pr_auc {e['pr_auc']:.4f}  brier {e['brier']:.4f}  ece {e['ece']:.4f}")
    return _verdict("quality gate", summary)


def _opt(path: Path | None) -> str | None:
    return str(path) if path else None


def _write_json(path: Path | None, payload: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))


def _print_deploy(result: dict | None) -> None:
    if not result:
        return
    for d in result["deployments"]:
        print(f"target {d['target']}: {d['action']} version {d['version']} at {d['url']}; smoke test passed "
              f"(golden max |Δp| {d['smoke']['golden_max_abs_diff']:.1e}, p50 {d['smoke']['latency_ms_p50']} ms)")
    print(f"champion: {result['champion_before'] or 'none'} -> {result['champion_after']}")
    if result.get("fleet"):
        print(f"fleet {result['fleet']['fleet']} ({result['fleet']['strategy']}): {result['fleet']['summary']}")
    url = result.get("balancer") or (result["deployments"][0]["url"] if result["deployments"] else None)
    if url:
        print("\ntry it:")
        print(f"  curl {url}/health")
        print(f"  curl {url}/model_info")
        print(f"  curl -X POST {url}/predict -H 'Content-Type: application/json' \\")
        print("    -d '{\"features\": [{\"age\": 40, \"income\": 52000, \"debt_ratio\": 0.4, \"credit_lines\": 3, "
              "\"late_payments\": 0, \"employment_years\": null, \"region\": \"north\", \"purpose\": \"car\", "
              "\"has_mortgage\": true}]}'")


def cmd_recalibrate(args) -> int:
    from tasks.constants import FEEDBACK
    from tasks.settings import load_settings

    load_settings(args.config)   # fail fast, before Prefect starts, on a bad config
    if args.labels != FEEDBACK and not Path(args.labels).is_file():
        print(f"error: --labels {args.labels}: no such file (a labels CSV, or '{FEEDBACK}')", file=sys.stderr)
        return EXIT_USER_ERROR
    from flows.recalibrate import recalibrate_flow

    chosen = args.targets or ["local"]
    summary = recalibrate_flow(version=args.version, labels=args.labels, targets=[] if args.no_deploy else chosen,
                               targets_file=_opt(args.targets_file), config=_opt(args.config), label_targets=chosen)
    _write_json(args.json_out, summary)
    gate, src, labels = summary["gate"], summary["recalibrated_from"], summary["labels"]
    print()
    print(f"model version {summary['version']} (release {summary['release']}): version {src['version']} (release "
          f"{src['release']}) recalibrated, exported to {summary['model_dir']}")
    print(f"registered as {summary['registry']['name']} version {summary['registry']['version']} in MLflow "
          f"(run {summary['registry']['run_id']})")
    print(f"labels: {labels['source']}, {labels['rows']} rows ({labels['fit_rows']} fitted, {labels['holdout_rows']} "
          f"held out, split {labels['how']})")
    for metric, c in gate["comparison"].items():
        low, high = c["interval"]
        print(f"held out {metric}: version {src['version']} {c['version_' + src['version']]:.4f} -> "
              f"{c['recalibrated']:.4f} (difference {c['difference']:+.4f}, interval [{low:+.4f}, {high:+.4f}])")
    return _verdict("recalibration gate", summary)


def _verdict(gate_name: str, summary: dict) -> int:
    """The gate's verdict (and the deploy, when there was one); the exit code."""
    gate = summary["gate"]
    for note in gate.get("notes", []):
        print(f"note: {note}")
    if gate["passed"]:
        print(f"{gate_name}: passed; alias '{summary['registry']['alias']}' now points at it")
        _print_deploy(summary.get("deploy"))
        return 0
    print(f"{gate_name}: FAILED", file=sys.stderr)
    for reason in gate["reasons"]:
        print(f"  - {reason}", file=sys.stderr)
    return EXIT_GATE_FAILED


def cmd_deploy(args) -> int:
    from flows.deploy import deploy_flow

    if args.fleet and args.targets:
        print("error: give --target or --fleet, not both", file=sys.stderr)
        return EXIT_USER_ERROR
    result = deploy_flow(version=args.version, targets=None if args.fleet else (args.targets or ["local"]),
                         targets_file=_opt(args.targets_file), config=_opt(args.config), reason="manual deploy",
                         fleet=args.fleet)
    _write_json(args.json_out, result)
    _print_deploy(result)
    return 0


def cmd_rollback(args) -> int:
    from flows.deploy import rollback_flow

    result = rollback_flow(target=args.target, version=args.to_version, targets_file=_opt(args.targets_file),
                           config=_opt(args.config), reason="manual rollback", fleet=args.fleet)
    _write_json(args.json_out, result)
    if args.fleet:
        for d in result["deployments"]:
            print(f"target {d['target']}: now serves version {d['version']}; smoke test passed")
        print(f"champion: {result['champion_before']} -> {result['champion_after']}")
        return 0
    print(f"target {args.target}: now serves version {result['deployment']['version']}; smoke test passed")
    print(f"champion: {result['champion_before']} -> {result['champion_after']}")
    return 0


def cmd_status(args) -> int:
    from tasks.constants import CHAMPION
    from tasks.deploy.targets import load_targets, pick_targets
    from tasks.deploy.transports import transport_for
    from tasks.registry import MlflowRegistry
    from tasks.settings import load_settings

    settings = load_settings(args.config)
    drained = None
    if args.fleet:
        from tasks.deploy.balancer import NginxBalancer
        from tasks.deploy.fleets import inventory_path, load_fleet

        fleet, targets = load_fleet(args.targets_file, settings.pipeline_home, args.fleet)
    else:
        targets = pick_targets(load_targets(args.targets_file, settings.pipeline_home), args.targets or ["local"])
    champion = MlflowRegistry(settings).alias_version(CHAMPION)
    expected = champion.tags.get("export_version") if champion else None
    print(f"registry: {settings.model_name} champion = version {champion.version if champion else 'none'}"
          f" (export version {expected or '-'})")
    if args.fleet:
        print(f"fleet {fleet.name}: {fleet.strategy}, {len(targets)} hosts", end="")
        if fleet.balancer is not None:
            balancer = NginxBalancer(fleet, targets, str(inventory_path(args.targets_file)))
            state, answering = balancer.state(), balancer.served_generation()
            drained = state.drained
            print(f"; nginx at {balancer.url}: " + (f"generation {answering}" if answering is not None
                                                    else "NOT answering") + f" (written: {state.generation}), "
                  f"out of rotation: {', '.join(sorted(drained)) or 'none'}")
        else:
            print()
    mismatch = False
    for target in targets:
        state = transport_for(target).host("status")
        served = state.get("default_version")
        ok = served == expected
        mismatch |= not ok
        rotation = "" if drained is None else ", OUT of rotation" if target.name in drained else ", in rotation"
        diff = "" if ok else f"  <-- DIFFERS from the champion's {expected or 'nothing'}"
        print(f"target {target.name}: {'running' if state['running'] else 'not running'}, serves "
              f"{served or 'nothing'}, health {state.get('health', '-')}{rotation}{diff}")
    return 4 if mismatch else 0


def cmd_balancer(args) -> int:
    from tasks.deploy.balancer import NginxBalancer
    from tasks.deploy.fleets import inventory_path, load_fleet
    from tasks.errors import ConfigError
    from tasks.settings import load_settings

    settings = load_settings(args.config)
    fleet, targets = load_fleet(args.targets_file, settings.pipeline_home, args.fleet)
    if fleet.balancer is None:
        raise ConfigError(f"fleet {fleet.name} has no balancer: block in {inventory_path(args.targets_file)}")
    if args.out is not None:
        fleet = fleet.model_copy(update={"balancer": fleet.balancer.model_copy(update={"config_dir": args.out})})
    balancer = NginxBalancer(fleet, targets, str(inventory_path(args.targets_file)))
    drained = (balancer.state().drained | set(args.drain)) - set(args.undrain)
    if args.out is not None or not (args.drain or args.undrain):
        state = balancer.write(drained, example=args.out is not None)
        print(f"wrote {balancer.fleet_conf} and {balancer.conf} (generation {state.generation}; out of rotation: "
              f"{', '.join(sorted(state.drained)) or 'none'}); not reloaded")
        return 0
    state = balancer.apply(drained)
    print(f"nginx at {balancer.url} serves generation {state.generation}; out of rotation: "
          f"{', '.join(sorted(state.drained)) or 'none'}")
    return 0


def cmd_stop(args) -> int:
    from tasks.deploy.targets import load_targets, pick_targets
    from tasks.deploy.transports import transport_for
    from tasks.settings import load_settings

    settings = load_settings(args.config)
    (target,) = pick_targets(load_targets(args.targets_file, settings.pipeline_home), [args.target])
    result = transport_for(target).host("stop")
    print(f"target {target.name}: " + ("server stopped" if result["was_running"] else "no server was running"))
    return 0


def cmd_monitor(args) -> int:
    from flows.monitor import monitor_flow

    result = monitor_flow(targets=args.targets, targets_file=_opt(args.targets_file), config=_opt(args.config),
                          monitoring=_opt(args.monitoring))
    _write_json(args.json_out, result)
    for t in result["targets"]:
        f = t["finding"]
        print(f"target {f['target']}: serves {f['served'] or 'nothing'}; {f['finding']}")
        for version, alarms in t["alarms"].items():
            for a in alarms:
                print(f"  {a['level'].upper():8} {a['rule']} (v{version}): {a['message']} — {a['action']}")
    for c in result["transitions"]:
        print(f"{c['state']}: {c['level']} {c['rule']} on {c['target']}; sent to {', '.join(c['sent_to']) or '-'}")
    critical = any(a["level"] == "critical" for t in result["targets"] for found in t["alarms"].values()
                   for a in found)
    return EXIT_CRITICAL_ALARM if critical else 0


COMMANDS = {"infer-schema": cmd_infer_schema, "release": cmd_release, "recalibrate": cmd_recalibrate,
            "validate": cmd_validate,
            "deploy": cmd_deploy, "rollback": cmd_rollback, "status": cmd_status, "stop": cmd_stop,
            "monitor": cmd_monitor, "balancer": cmd_balancer}


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
    from tasks.errors import LockTimeout

    try:
        return COMMANDS[args.command](args)
    except LockTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
