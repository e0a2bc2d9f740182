"""What each command of ``python -m flows`` does: run its flow or stage, print what a person needs, return
the exit code. The options are ``flows.cli``'s parser.

Light at import like the parser: Prefect, TensorFlow and MLflow load inside the command that needs them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_GATE_FAILED = 3
EXIT_CRITICAL_ALARM = 5
EXIT_BUSY = 6   # another run of the model held its lock (release numbering, deploy, rollback) too long


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix: printed as one line and exit 2, never a traceback."""
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
