"""Scale benchmark: a release on N rows × 20 columns (default 1,000,000), time per stage and peak memory.

1. ``bench/make_wide.py`` writes the data as CSV and as Parquet, with its contract.
2. Each data stage runs alone in a fresh process (so its peak RSS, VmHWM, is its own): read and
   validate the CSV, the same for the Parquet file, and infer-schema's drafting from the CSV.
3. ``python -m flows release`` end to end (validate → train → calibrate → export → register → gate →
   deploy to a local target → promote) with ``bench/scale_pipeline.yaml``: the stage times from the
   run summary, the CLI's wall time, and the peak RSS of the largest process (getrusage of children).

Usage: .venv/bin/python bench/bench_scale.py [--rows 1000000] [--format csv|parquet] [--skip-release]
                                             [--out bench/results/scale_1000000.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "bench" / "scale_pipeline.yaml"
STAGES = ("contract", "validate", "champion", "train", "calibrate", "reserve", "export", "register", "gate", "deploy")

# One data stage in a fresh interpreter: prints {"seconds", "peak_rss_mb", "rss_before_mb"}. The peak is the
# process's high-water mark of resident memory (getrusage's ru_maxrss, KiB on Linux: VmHWM).
CHILD = """
import json, resource, sys, time
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
stage, data, folder, module = sys.argv[1:5]
from tasks.contract_files import load_schema
if module:   # the data stage of another commit (--baseline), imported from its file
    import importlib.util
    spec = importlib.util.spec_from_file_location("baseline_data", module)
    baseline = importlib.util.module_from_spec(spec)
    sys.modules["baseline_data"] = baseline
    spec.loader.exec_module(baseline)
    infer_contract, load_dataset = baseline.infer_contract, baseline.load_dataset
else:
    from tasks.training.data import infer_contract, load_dataset
import pyarrow, pandas, numpy   # imports are not the stage
schema = load_schema(folder + "/schema.yaml")
before = peak_mb()
start = time.perf_counter()
if stage == "infer":
    infer_contract(data, "label", "1")
else:
    ds = load_dataset(data, schema)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb()),
                  "rss_before_mb": round(before)}))
"""


def _load() -> float:
    """Cores other processes kept busy (the 1-minute load average minus our own runnable process)."""
    return round(os.getloadavg()[0], 2)


def data_stage(stage: str, data: Path, module: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = _load()
    proc = subprocess.run([sys.executable, "-c", CHILD, stage, str(data), str(data.parent), str(module or "")],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg_1m": load}


def release(home: Path, data: Path) -> dict:
    from testkit.net import free_port

    targets = home / "targets.yaml"
    targets.write_text(f"targets:\n  bench:\n    base_dir: target\n    port: {free_port()}\n    start_timeout_s: 300\n")
    env = {**os.environ, "PIPELINE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = home / "summary.json"
    load = _load()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows", "release", "--data", str(data), "--schema",
                           str(data.parent / "schema.yaml"), "--feature-list", str(data.parent / "feature_list.csv"),
                           "--config", str(CONFIG), "--targets", str(targets), "--target", "bench",
                           "--json-out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # KiB on Linux
    subprocess.run([sys.executable, "-m", "flows", "stop", "--target", "bench", "--targets", str(targets)],
                   cwd=ROOT, env=env, capture_output=True, timeout=120)
    if proc.returncode not in (0, 3):   # 3: the gate refused; the release itself completed
        raise RuntimeError(proc.stderr[-3000:])
    summary = json.loads(out.read_text())
    t = summary["timings"]
    return {"rows": summary["data"]["rows"], "exit": proc.returncode, "cli_wall_s": round(wall, 1),
            "flow_s": t["flow_total"], "stages_s": {s: t.get(s) for s in STAGES}, "cv_s": t["cv"],
            "ensemble_s": t.get("ensemble"), "peak_rss_mb": round(peak), "load_avg_1m_at_start": load,
            "load_avg_1m_at_end": _load(), "cv_metrics": summary["cv_metrics"], "gate": summary["gate"],
            "training_rows_per_second": summary["training_rows_per_second"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="what the release reads")
    parser.add_argument("--skip-release", action="store_true")
    parser.add_argument("--baseline", metavar="COMMIT", default=None,
                        help="also time the CSV data stages with tasks/training/data.py of this commit, alternating "
                             "with the current one (--repeat times)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"scale_{args.rows}.json"
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results: dict = {"rows": args.rows, "columns": 20, "cpus": os.cpu_count(), "config": str(CONFIG.relative_to(ROOT))}
    try:
        csv, parquet = tmp / "data" / "wide.csv", tmp / "data" / "wide.parquet"
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_wide.py"), "--rows", str(args.rows), "--out",
                        str(csv), "--out", str(parquet)], check=True, timeout=1800,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        results["generate_s"] = round(time.perf_counter() - start, 1)
        results["file_mb"] = {"csv": round(csv.stat().st_size / 2**20, 1),
                              "parquet": round(parquet.stat().st_size / 2**20, 1)}
        print(json.dumps(results), flush=True)
        results["data_stages"] = {}
        for name, stage, data in (("validate_csv", "load", csv), ("validate_parquet", "load", parquet),
                                  ("infer_csv", "infer", csv)):
            results["data_stages"][name] = data_stage(stage, data)
            print(name, json.dumps(results["data_stages"][name]), flush=True)
        if args.baseline:
            old = tmp / "baseline_data.py"
            old.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline}:tasks/training/data.py"],
                                          check=True, capture_output=True, text=True).stdout)
            ab: dict = {"baseline": args.baseline, "runs": []}
            for _ in range(args.repeat):
                for stage in ("load", "infer"):
                    for which, module in (("baseline", old), ("current", None)):
                        ab["runs"].append({"stage": stage, "code": which, **data_stage(stage, csv, module)})
                        print(json.dumps(ab["runs"][-1]), flush=True)
            results["baseline_ab_csv"] = ab
        if not args.skip_release:
            home = tmp / "home"
            home.mkdir()
            print(f"release on {args.format} ...", flush=True)
            results["release"] = {"format": args.format, **release(home, csv if args.format == "csv" else parquet)}
            print(json.dumps(results["release"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
