"""Batch scoring benchmark: ``python -m flows score`` serially on 1,000,000 rows x 20 columns (Parquet and CSV),
and ``mlflow models predict`` on the same registered version and input, in the same run.

  rows/s     the job's rows per second (the command's own timer: read, check, score, write) and the whole
             command's wall time (Python, TensorFlow and MLflow start-up, the export's checks included)
  peak RSS   the largest resident size of the command's processes (getrusage of the waited-for children,
             measured in a fresh wrapper process per run, so one run's peak never hides another's)

The input is the demo's 9 model inputs (data/make_demo.py) plus an id and 10 other numeric columns, written
once per run under a temporary directory (never committed); Parquet in row groups of 100,000 rows.
``mlflow models predict`` reads the whole CSV with pandas (its design) and scores through the registered
pyfunc, which calls the server's own loader (tasks/registry/pyfunc_model.py).

Usage: .venv/bin/python bench/score_bench.py [--home DIR] [--rows 1000000] [--no-mlflow]
                                           [--out bench/results/score.json]
Without --home it releases one demo version first (search off, 2 folds: the network's size is the default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
EXTRA_NUMERIC = 10
ROW_GROUP = 100_000
BENCH_CONFIG = """model_name: bench-score
training:
  cv_folds: 2
  epochs: 5
  search: {enabled: false}
"""
# Runs the command given after it and prints the largest RSS (kB) among its waited-for descendants.
PEAK = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def prepare_home(home: Path) -> None:
    config = home / "pipeline.yaml"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(BENCH_CONFIG)
    subprocess.run([PY, "-m", "flows", "release", "--data", "data/demo.csv", "--schema", "configs/schema.yaml",
                    "--feature-list", "configs/feature_list.csv", "--config", str(config), "--no-deploy"],
                   cwd=ROOT, env={**os.environ, "PIPELINE_HOME": str(home)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_input(folder: Path, rows: int) -> dict[str, Path]:
    """The input as Parquet and CSV: the demo's columns, an id and EXTRA_NUMERIC noise columns (~20 columns)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from testkit.demo import make_demo

    frame = make_demo(n_rows=rows, seed=5).drop(columns=["default"])
    rng = np.random.default_rng(5)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("customer_id", pa.array(np.arange(rows, dtype=np.int64)))
    for i in range(EXTRA_NUMERIC):
        table = table.append_column(f"x{i}", pa.array(rng.normal(size=rows)))
    paths = {"parquet": folder / "input.parquet", "csv": folder / "input.csv"}
    pq.write_table(table, paths["parquet"], row_group_size=ROW_GROUP)
    pacsv.write_csv(table, paths["csv"])
    return paths


def peak_run(argv: list[str], env: dict) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS in MiB) of ``argv`` run in a fresh wrapper process."""
    start = time.perf_counter()
    out = subprocess.run([PY, "-c", PEAK, *argv], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    rc, kb = out.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
    return int(rc), round(time.perf_counter() - start, 1), round(int(kb) / 1024, 1)


def score_run(env: dict, data: Path, out: Path, fmt: str) -> dict:
    summary = out.with_suffix(".json")
    rc, wall, peak = peak_run([PY, "-m", "flows", "score", "--version", "1", "--data", str(data), "--out", str(out),
                               "--keep", "customer_id", "--overwrite", "--json-out", str(summary)], env)
    assert rc == 0, f"score on {fmt} exited {rc}"
    result = json.loads(summary.read_text())["result"]
    return {"input": fmt, "rows": result["rows"], "job_s": result["seconds"], "rows_per_s": result["rows_per_s"],
            "wall_s": wall, "wall_rows_per_s": round(result["rows"] / wall, 1), "peak_rss_mb": peak}


def mlflow_run(env: dict, data: Path, out: Path, rows: int) -> dict:
    mlflow = str(Path(PY).with_name("mlflow"))
    rc, wall, peak = peak_run([mlflow, "models", "predict", "-m", "models:/bench-score/1", "-i", str(data), "-t",
                               "csv", "-o", str(out), "--env-manager", "local"], env)
    assert rc == 0, f"mlflow models predict exited {rc}"
    return {"input": "csv", "rows": rows, "wall_s": wall, "wall_rows_per_s": round(rows / wall, 1),
            "peak_rss_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "score.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="score-bench-"))
    home = args.home or tmp / "home"
    if args.home is None:
        print("releasing one demo version…", flush=True)
        prepare_home(home)
    env = {**os.environ, "PIPELINE_HOME": str(home), "PIPELINE_CONFIG": str(home / "pipeline.yaml"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    print(f"writing {args.rows} rows…", flush=True)
    paths = make_input(tmp, args.rows)
    results = {"rows": args.rows, "columns": 20, "cpus": os.cpu_count(),
               "input_mb": {k: round(p.stat().st_size / 2**20, 1) for k, p in paths.items()}, "score": []}
    for fmt, path in paths.items():
        print(f"score, {fmt}…", flush=True)
        results["score"].append(score_run(env, path, tmp / f"scores-{fmt}.parquet", fmt))
        print(json.dumps(results["score"][-1]), flush=True)
    if not args.no_mlflow:
        print("mlflow models predict, csv…", flush=True)
        results["mlflow_models_predict"] = mlflow_run(env, paths["csv"], tmp / "mlflow-out.json", args.rows)
        print(json.dumps(results["mlflow_models_predict"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for path in tmp.iterdir():          # the generated input and the outputs: hundreds of MB
        if path.is_file():
            path.unlink()
    print(f"wrote {args.out}" + ("" if args.home else f"; the released home is kept for --home: {home}"))


if __name__ == "__main__":
    main()
