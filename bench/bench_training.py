"""Training benchmark: the calibrated TabularANN against a HistGradientBoosting baseline.

Both models are scored on exactly the same stratified folds (the ones ``tasks.training.train``
draws), and both are calibrated with the pipeline's own cross-fitted procedure
(``tasks.training.calibrate.calibrate`` with ``calibration.method`` from the config), so the
comparison is apples to apples. The baseline is untuned (scikit-learn's defaults).

Datasets (all inside installed packages or the repository, nothing is downloaded):
    demo           data/demo.csv with the shipped contract (configs/schema.yaml, configs/feature_list.csv)
    breast_cancer  scikit-learn's load_breast_cancer(): 569 rows, positive class "malignant"
    fair           statsmodels' fair (affairs) data: 6366 rows, positive class affairs > 0
    anes96         statsmodels' anes96 (1996 US election survey): 944 rows, positive class voted Dole
    diabetes       scikit-learn's load_diabetes(): 442 rows, positive class progression above the median
    randhie        statsmodels' randhie (RAND health insurance experiment): 20190 rows, any doctor visit

For the public datasets the contract is drafted by our own ``infer_contract``.

Run from the repository root:
    .venv/bin/python bench/bench_training.py [--datasets demo,fair] [--out bench/results/training.json]

Goal checked (from issue 13): on every set our AUC (raw and calibrated) >= the baseline's, or at most
0.005 below it where the paired 95% bootstrap interval of the difference includes zero; our ECE after
calibration (cross-fitted) <= 0.02. The one-row p50 is scoring one row through the exported version
with ``serving.contract.model.LoadedModel.score_columns``, the call /predict makes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from training_report import cpu_snapshot, environment, markdown, other_load

from testkit.load import percentile

# TensorFlow is only imported inside functions (through tasks.*), after this line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF 2.21 logs harmless tf.data attribute errors at level 2

ROOT = Path(__file__).resolve().parent.parent

DATASETS = ("demo", "breast_cancer", "fair", "anes96", "diabetes", "randhie")
AUC_TOLERANCE = 0.005     # ours may be at most this much below the baseline, and only where the
                          # paired 95% interval of the difference includes zero
ECE_TARGET = 0.02         # our calibrated, cross-fitted ECE (equal-width bins)
BOOTSTRAP_REPS = 1000
LATENCY_CALLS = 400          # per round
LATENCY_ROUNDS = 5


# ---------------------------------------------------------------- datasets

def prepare(name: str, workdir: Path):
    """Return (csv_path, schema, features, notes, infer_seconds) for one dataset."""
    from tasks.contract_files import load_feature_list, load_schema
    from tasks.training.data import infer_contract

    if name == "demo":
        schema = load_schema(ROOT / "configs" / "schema.yaml")
        features = load_feature_list(ROOT / "configs" / "feature_list.csv")
        features.check_against(schema)
        return ROOT / "data" / "demo.csv", schema, features, [], None

    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer(as_frame=True)
        frame = bunch.data.copy()
        # scikit-learn's names contain spaces ("mean radius"); kept as they are, the pipeline maps them
        # to valid tensor names itself.
        # sklearn codes malignant as 0; the clinically interesting class is the positive one here.
        frame["diagnosis"] = np.where(bunch.target.to_numpy() == 0, "malignant", "benign")
        target, positive = "diagnosis", "malignant"
    elif name == "fair":
        from statsmodels.datasets import fair

        frame = fair.load_pandas().data.copy()
        frame["affair"] = (frame.pop("affairs") > 0).astype(int)   # the amount itself would leak the label
        target, positive = "affair", "1"
    elif name == "anes96":
        from statsmodels.datasets import anes96

        frame = anes96.load_pandas().data.copy()
        frame = frame.drop(columns=["logpopul"])                   # log of popul, a copy of another column
        frame["vote"] = frame["vote"].astype(int)                  # 1: voted Dole, 0: Clinton (1996)
        target, positive = "vote", "1"
    elif name == "diabetes":
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes(as_frame=True, scaled=False)
        frame = bunch.data.copy()
        # progression a year later, above its median: a balanced binary task on 442 patients
        frame["progressed"] = (bunch.target.to_numpy() > np.median(bunch.target.to_numpy())).astype(int)
        target, positive = "progressed", "1"
    elif name == "randhie":
        from statsmodels.datasets import randhie

        frame = randhie.load_pandas().data.copy()
        frame["visited"] = (frame.pop("mdvis") > 0).astype(int)   # any outpatient visit that year
        target, positive = "visited", "1"
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")

    csv_path = workdir / f"{name}.csv"
    frame.to_csv(csv_path, index=False)
    t0 = time.perf_counter()
    schema, features, notes = infer_contract(csv_path, target, positive)
    return csv_path, schema, features, notes, time.perf_counter() - t0


# ---------------------------------------------------------------- baseline

def baseline_matrix(ds, schema, features) -> tuple[np.ndarray, np.ndarray]:
    """Numeric matrix for HGB: categories ordinal-encoded (missing -> NaN), flagged as categorical."""
    cols, is_cat = [], []
    for name in features.names:
        spec = schema.column(name)
        values = ds.columns[name]
        if spec.type == "categorical":
            lookup = {c: float(i) for i, c in enumerate(spec.categories)}
            cols.append(np.array([lookup.get(v, np.nan) for v in values], dtype=np.float64))
            is_cat.append(True)
        else:
            cols.append(values.astype(np.float64))
            is_cat.append(False)
    return np.column_stack(cols), np.array(is_cat)


def baseline_oof(ds, schema, features, folds, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, is_cat = baseline_matrix(ds, schema, features)
    oof = np.full(ds.n_rows, np.nan)
    t0 = time.perf_counter()
    for tr, va in folds:
        clf = HistGradientBoostingClassifier(categorical_features=is_cat if is_cat.any() else None,
                                             random_state=seed)
        clf.fit(X[tr], ds.y[tr])
        oof[va] = clf.predict_proba(X[va])[:, 1]
    return oof, time.perf_counter() - t0


# ---------------------------------------------------------------- statistics

def paired_bootstrap_auc_diff(y, ours, theirs, reps: int, seed: int) -> dict:
    """95% interval of roc_auc(ours) - roc_auc(theirs), resampling rows (paired)."""
    from sklearn.metrics import roc_auc_score as roc_auc

    rng = np.random.default_rng(seed)
    n = y.size
    diffs = []
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        diffs.append(roc_auc(yb, ours[idx]) - roc_auc(yb, theirs[idx]))
    diffs = np.asarray(diffs)
    return {"point": float(roc_auc(y, ours) - roc_auc(y, theirs)),
            "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
            "reps": int(diffs.size)}


def auc_goal_met(diff: dict) -> bool:
    """Ours >= the baseline, or at most AUC_TOLERANCE below it where the paired interval includes zero."""
    return diff["point"] >= 0 or (diff["point"] >= -AUC_TOLERANCE and diff["ci95"][0] <= 0 <= diff["ci95"][1])


def per_fold_auc(y, scores, folds) -> list[float]:
    from sklearn.metrics import roc_auc_score as roc_auc

    return [float(roc_auc(y[va], scores[va])) for _, va in folds]


def one_row_latency(version_dir: Path, calls: int = LATENCY_CALLS) -> dict:
    """p50/p99 of scoring ONE row through the exported version, the way /predict does (serving.scoring.batcher)."""
    from serving.contract.inputs import coerce_column
    from serving.contract.model import LoadedModel

    model = LoadedModel.load(version_dir)
    row = model.metadata.golden_examples[0].features
    columns = {name: coerce_column(spec, [row.get(name)]).values for name, spec in model.specs.items()}
    for _ in range(100):
        model.score_columns(columns)
    # Rounds, and the median of their p50s: right after training, a first round can be slow as a whole
    # (randhie once measured 0.41 ms in the first of five rounds, 0.26 ms in the other four).
    p50s, p99s = [], []
    for _ in range(LATENCY_ROUNDS):
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            model.score_columns(columns)
            times.append(time.perf_counter() - t0)
        p50s.append(percentile(times, 50) * 1e3)
        p99s.append(percentile(times, 99) * 1e3)
    return {"p50_ms": round(float(np.median(p50s)), 3), "p99_ms": round(float(np.median(p99s)), 3),
            "round_p50s_ms": [round(v, 3) for v in p50s], "calls": calls, "rounds": LATENCY_ROUNDS}


# ---------------------------------------------------------------- one dataset

def run_dataset(name: str, workdir: Path, overrides: dict) -> dict:
    from tasks.metrics import binary_metrics
    from tasks.settings import load_settings
    from tasks.training.calibrate import calibrate
    from tasks.training.data import load_dataset
    from tasks.training.export import export_model
    from tasks.training.train import train

    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    settings = load_settings(None, env={"PIPELINE_HOME": str(home)}, overrides=overrides)
    method, n_bins = settings.calibration.method, settings.calibration.n_bins
    out: dict = {"dataset": name}
    stages: dict[str, float | None] = {}

    csv_path, schema, features, notes, infer_s = prepare(name, workdir)
    stages["infer_contract"] = infer_s
    out["contract_notes"] = notes
    out["features"] = [f.model_dump(mode="json", exclude_none=True) for f in features.features]

    t0 = time.perf_counter()
    ds = load_dataset(csv_path, schema, min_rows=settings.training.min_rows,
                      min_class_rows=settings.training.min_class_rows)
    stages["validate_load"] = time.perf_counter() - t0
    out.update(rows=ds.n_rows, positives=ds.positives, positive_rate=ds.positives / ds.n_rows,
               n_features=len(features.names))
    print(f"[{name}] {ds.n_rows} rows, {ds.positives} positive, {len(features.names)} features", flush=True)

    tr = train(ds, schema, features, settings)
    stages["cross_validation"] = tr.timings["cv_seconds"]
    stages["ensemble"] = tr.timings["ensemble_seconds"]
    out["ours_folds"] = [{"fold": f.fold, "best_epoch": f.best_epoch, "epochs_run": f.epochs_run,
                          "seconds": f.seconds, "roc_auc": f.metrics["roc_auc"]} for f in tr.fold_results]
    out["ensemble_members"] = tr.ensemble_members
    out["rows_per_second"] = tr.training_rows_per_second
    out["search"] = tr.search          # the network search (None when off): what was tried, what was chosen
    print(f"[{name}] trained: CV {tr.timings['cv_seconds']:.1f}s, ensemble of {tr.ensemble_members}, "
          f"{tr.training_rows_per_second:.0f} rows/s", flush=True)

    # The out-of-fold scores behind every figure, for analysis without retraining (kept with --workdir).
    np.savez(home / "scores.npz", y=ds.y, oof_raw=tr.oof_raw,
             fold=np.concatenate([np.full(va.size, k) for k, (_tr, va) in enumerate(tr.folds)])[
                 np.argsort(np.concatenate([va for _tr, va in tr.folds]))])
    t0 = time.perf_counter()
    cal = calibrate(tr.oof_raw, ds.y, tr.folds, method, n_bins, None)
    stages["calibrate"] = time.perf_counter() - t0
    out["calibration"] = {"requested": method, "chosen": cal.method, "reason": cal.reason,
                          "candidates": cal.candidates}

    t0 = time.perf_counter()
    try:
        exported = export_model(tr, cal, ds, schema, features, settings, "1.0.0", {}, version="1")
        stages["export"] = time.perf_counter() - t0
        out["export"] = {"ok": True, "version": exported.version,
                         "fidelity_max_abs_diff": exported.fidelity_max_abs_diff,
                         "golden_max_abs_diff": exported.golden_max_abs_diff}
        out["one_row_latency"] = one_row_latency(exported.path)
    except Exception as exc:  # noqa: BLE001 - a failed export is a result to report; the metrics stand
        stages["export"] = None
        out["export"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(f"[{name}] export FAILED: {type(exc).__name__}: {exc}", flush=True)

    # Baseline on exactly the same folds, calibrated the same way.
    hgb_raw, hgb_seconds = baseline_oof(ds, schema, features, tr.folds, settings.seed)
    hgb_cal = calibrate(hgb_raw, ds.y, tr.folds, method, n_bins, None)
    out["baseline_calibration"] = {"chosen": hgb_cal.method, "reason": hgb_cal.reason}
    stages["baseline_cross_validation"] = hgb_seconds

    out["ours"] = {"raw": cal.metrics_before, "calibrated": cal.metrics_after}
    out["baseline"] = {"raw": binary_metrics(ds.y, hgb_raw, n_bins), "calibrated": hgb_cal.metrics_after}
    assert np.allclose(out["baseline"]["raw"]["roc_auc"], hgb_cal.metrics_before["roc_auc"])
    out["per_fold_roc_auc"] = {"ours": per_fold_auc(ds.y, tr.oof_raw, tr.folds),
                               "baseline": per_fold_auc(ds.y, hgb_raw, tr.folds)}
    out["auc_diff_raw"] = paired_bootstrap_auc_diff(ds.y, tr.oof_raw, hgb_raw, BOOTSTRAP_REPS, settings.seed)
    out["auc_diff_calibrated"] = paired_bootstrap_auc_diff(ds.y, cal.oof_calibrated, hgb_cal.oof_calibrated,
                                                           BOOTSTRAP_REPS, settings.seed)
    out["goal"] = {
        "auc_gap_calibrated": out["auc_diff_calibrated"]["point"],
        "auc_gap_raw": out["auc_diff_raw"]["point"],
        "auc_met": bool(auc_goal_met(out["auc_diff_calibrated"]) and auc_goal_met(out["auc_diff_raw"])),
        "ece_after": out["ours"]["calibrated"]["ece"],
        "ece_met": bool(out["ours"]["calibrated"]["ece"] <= ECE_TARGET),
    }
    out["stages_seconds"] = {k: (round(v, 3) if v is not None else None) for k, v in stages.items()}
    return out


def parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated, from {','.join(DATASETS)} (default: all)")
    parser.add_argument("--out", default="bench/results/training.json", help="where to write the JSON results")
    parser.add_argument("--workdir", default=None,
                        help="keep the exported versions under this folder (default: a temporary one, removed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every dataset, e.g. training.epochs=30 (default: none)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    overrides = parse_overrides(args.set)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.chdir(ROOT)
    results = []
    load_before = os.getloadavg()   # timings are only meaningful on an otherwise idle machine
    snap_all = cpu_snapshot()
    t_all = time.perf_counter()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-training-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            t0 = time.perf_counter()
            snap = cpu_snapshot()
            try:
                r = run_dataset(name, workdir, overrides)
            except Exception as exc:  # noqa: BLE001 - one broken dataset must not hide the others' results
                traceback.print_exc()
                r = {"dataset": name, "error": f"{type(exc).__name__}: {exc}"}
            r["total_seconds"] = round(time.perf_counter() - t0, 1)
            r["machine_load"] = other_load(snap)
            results.append(r)
            print(f"[{name}] done in {r['total_seconds']:.0f}s; other processes used "
                  f"{r['machine_load']['other_processes_cores']:.2f} cores meanwhile", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    from tasks.settings import load_settings

    env = environment()   # after training, so importing TF here cannot pre-empt its thread settings
    env["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    env["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    env["machine_load"] = other_load(snap_all)
    config = load_settings(None, env={"PIPELINE_HOME": "/tmp"}, overrides=overrides)
    report = {
        "environment": env,
        "overrides": overrides,
        "training_config": config.training.model_dump(mode="json"),
        "calibration_config": config.calibration.model_dump(mode="json"),
        "seed": config.seed,
        "goal": {"auc_tolerance": AUC_TOLERANCE, "ece_target": ECE_TARGET},
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print()
    print(f"nproc {env['nproc']}, python {env['python']}, tensorflow {env['tensorflow']}, "
          f"keras {env['keras']}, scikit-learn {env['scikit_learn']}; total {report['total_seconds']:.0f}s; "
          f"load average before {env['loadavg_1_5_15_before']}, after {env['loadavg_1_5_15_after']}")
    if env["machine_load"]["other_processes_cores"] > 0.1:
        print(f"warning: other processes used {env['machine_load']['other_processes_cores']:.2f} of "
              f"{env['nproc']} cores during the run; the timings are inflated", file=sys.stderr)
    print(markdown(results))
    print(f"\nresults: {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
