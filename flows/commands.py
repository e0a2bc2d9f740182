"""What the commands that make a version do (infer-schema, validate, release, recalibrate): check the inputs,
run the flow, print what a person needs, return the exit code; with the helpers every command shares. The
options are ``flows.cli``'s parser; the commands that serve a version are ``flows.commands_serving``.

Light at import like the parser: Prefect, TensorFlow and MLflow load inside the command that needs them, and
every input is checked (``flows.models``) before a flow, and so Prefect, starts.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_GATE_FAILED = 3
EXIT_DIFFERS = 4   # status: a target serves something other than the champion
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
    following = release_command(args.data, schema_path, features_path, config_path)
    print(f"then release it:\n  {following}")
    write_json(args.json_out, {"schema": str(schema_path), "feature_list": str(features_path),
                               "config": str(config_path), "model_name": name, "notes": notes,
                               "next_command": following})
    return 0


def release_command(data: str, schema: Path, feature_list: Path, config: Path) -> str:
    """The release command for drafted configs, as a shell reads it."""
    words = ["release", "--data", str(data), "--schema", str(schema), "--feature-list", str(feature_list),
             "--config", str(config)]
    return "python -m flows " + " ".join(shlex.quote(w) for w in words)


def _load_inputs(args):
    from flows.models import check_file, settings_for
    from tasks.contract_files import load_feature_list, load_schema
    from tasks.training.data import load_dataset

    settings = settings_for(args.config, getattr(args, "model", None))
    check_file("--schema", args.schema, "the data contract, schema.yaml")
    schema = load_schema(args.schema)
    if args.feature_list is not None:
        check_file("--feature-list", args.feature_list, "feature_list.csv")
        load_feature_list(args.feature_list).check_against(schema, str(args.feature_list))
    ds = load_dataset(args.data, schema, settings.training.min_rows, settings.training.min_class_rows)
    if getattr(args, "eval_data", None) is not None:
        load_dataset(args.eval_data, schema, settings.gate.min_eval_rows, settings.training.min_class_rows)
    return settings, ds


def cmd_validate(args) -> int:
    _settings, ds = _load_inputs(args)
    print(f"{args.data}: {ds.n_rows} rows, {ds.positives} positive; conforms to {args.schema}")
    write_json(args.json_out, {"data": str(args.data), "schema": str(args.schema), "rows": ds.n_rows,
                               "positives": ds.positives, "sha256": ds.sha256, "conforms": True})
    return 0


def cmd_release(args) -> int:
    from flows.models import check_targets

    settings, _ds = _load_inputs(args)  # fail fast, before Prefect starts, on bad input
    fleet = None if args.no_deploy else args.fleet
    targets = [] if args.no_deploy or fleet else (args.targets or ["local"])
    if targets or fleet:
        check_targets(settings, args.targets_file, targets, fleet)
    from flows.release import release_flow

    summary = release_flow(data=str(args.data), schema=str(args.schema), feature_list=str(args.feature_list),
                           config=opt(args.config), targets=targets, targets_file=opt(args.targets_file),
                           eval_data=opt(args.eval_data), fleet=fleet, model=args.model)
    write_json(args.json_out, summary)
    print()
    print(f"model version {summary['version']} (release {summary['release']}) exported to {summary['model_dir']}")
    print(f"registered as {summary['registry']['name']} version {summary['registry']['version']} in MLflow "
          f"(run {summary['registry']['run_id']})")
    m = summary["cv_metrics"]
    print(f"cv: roc_auc {m['roc_auc']:.4f}  pr_auc {m['pr_auc']:.4f}  brier {m['brier']:.4f}  ece {m['ece']:.4f} "
          f"(before calibration {summary['calibration']['ece_before']:.4f})")
    if "positive_rate" in m:
        print(f"against chance at {m['positive_rate']:.1%} positives: pr_auc_lift {m['pr_auc_lift']:.2f}  "
              f"brier_skill {m['brier_skill']:.3f}  ece_relative {m['ece_relative']:.3f}")
    if summary.get("evaluation"):
        rows, e = summary["evaluation"]["rows"], summary["evaluation"]["metrics"]
        print(f"shipped model on {rows['n_rows']} held-out rows ({rows['origin']}): roc_auc {e['roc_auc']:.4f}  "
              f"pr_auc {e['pr_auc']:.4f}  brier {e['brier']:.4f}  ece {e['ece']:.4f}")
    return _verdict("quality gate", summary)


def opt(path: Path | None) -> str | None:
    return str(path) if path else None


def write_json(path: Path | None, payload: dict) -> None:
    """``--json-out``: the command's result as JSON, when asked for."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))


def print_deploy(result: dict | None, models_dir: Path | None = None) -> None:
    """What the deploy did, then commands to try it: a /predict body made of the served version's first
    golden example (its own columns), read from ``models_dir/<version>/metadata.json``."""
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
        row = _example_row(models_dir, result["champion_after"])
        if row:
            print(f"  curl -X POST {url}/predict -H 'Content-Type: application/json' \\")
            print(f"    -d '{json.dumps({'features': [row]})}'")


def _example_row(models_dir: Path | None, version) -> dict | None:
    """The first golden example's features of an exported version, or None when it cannot be read."""
    try:
        metadata = json.loads((Path(models_dir) / str(version) / "metadata.json").read_text())
        return metadata["golden_examples"][0]["features"]
    except (TypeError, OSError, ValueError, KeyError, IndexError):
        return None


def cmd_recalibrate(args) -> int:
    from flows.models import check_file, check_targets, check_version, choose_model
    from tasks.constants import FEEDBACK

    if args.labels != FEEDBACK:   # fail fast, before Prefect starts, on bad input
        check_file("--labels", args.labels, f"a labels CSV, or '{FEEDBACK}'")
    chosen = choose_model(args.config, args.model)
    check_version(chosen.settings, args.version)
    targets = args.targets or ["local"]
    if args.labels == FEEDBACK or not args.no_deploy:
        check_targets(chosen.settings, args.targets_file, targets)
    from flows.recalibrate import recalibrate_flow

    summary = recalibrate_flow(version=args.version, labels=args.labels, targets=[] if args.no_deploy else targets,
                               targets_file=opt(args.targets_file), config=chosen.config, label_targets=targets,
                               model=chosen.model)
    write_json(args.json_out, summary)
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
        print_deploy(summary.get("deploy"), Path(summary["model_dir"]).parent)
        return 0
    print(f"{gate_name}: FAILED", file=sys.stderr)
    for reason in gate["reasons"]:
        print(f"  - {reason}", file=sys.stderr)
    return EXIT_GATE_FAILED


def cmd_backup(args) -> int:
    """One archive of the pipeline home (``tasks.backup``), taken while runs go on."""
    from tasks.backup import backup
    from tasks.progress import format_bytes
    from tasks.settings import load_settings

    done = backup(load_settings(args.config).pipeline_home, args.out, overwrite=args.overwrite)
    models = ", ".join(f"{name} {len(m['versions'])} versions" for name, m in done.manifest["registry"].items())
    print(f"backup of {done.home} ({models or 'no registered model'}) written to {done.path}: "
          f"{format_bytes(done.size)}, {done.files} files, {done.seconds:.1f} s")
    write_json(args.json_out, {"archive": str(done.path), "home": str(done.home), "size": done.size,
                               "files": done.files, "seconds": round(done.seconds, 2),
                               "registry": done.manifest["registry"]})
    return 0


def cmd_restore(args) -> int:
    """Verify an archive of ``backup`` and restore it as a new pipeline home."""
    from tasks.backup import restore

    done = restore(args.archive, args.home, force=args.force)
    print(f"restored {done.path} ({done.manifest['created']}, {done.files} files, all SHA-256s verified) as "
          f"{done.home}; {done.manifest['rewritten_cells']} stored paths moved from {done.manifest['home']}; "
          f"{done.seconds:.1f} s")
    print(f"use it: export PIPELINE_HOME={shlex.quote(str(done.home))}")
    write_json(args.json_out, {"archive": str(done.path), "home": str(done.home), "files": done.files,
                               "old_home": done.manifest["home"], "created": done.manifest["created"],
                               "rewritten_cells": done.manifest["rewritten_cells"],
                               "registry": done.manifest["registry"], "seconds": round(done.seconds, 2)})
    return 0
