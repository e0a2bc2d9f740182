"""Release time with the cross-validation folds fitted serially vs in parallel on Dask (issue 13, item 8).

`python -m flows release --no-deploy` on the same data with the same config, once with
`training.parallel.runner: serial` and once with `runner: dask` (a local cluster sized to this
machine), alternating, `--rounds` times each. Reports the train stage and the whole flow, and checks
that both runs produced the same cross-validated metrics (the same seed gives the same model).

Usage: .venv/bin/python bench/bench_parallel.py [--rows 6000 20000] [--rounds 2] [--out bench/results/parallel.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNNERS = ("serial", "dask")


def _config(base: Path, runner: str) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "pipeline.yaml").read_text())
    data["training"]["parallel"] = {"runner": runner, "address": None, "workers": None}
    path = base / f"pipeline-{runner}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def release(home: Path, data: Path, config: Path) -> dict:
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = home / "summary.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows", "release", "--data", str(data), "--schema",
                           "configs/schema.yaml", "--feature-list", "configs/feature_list.csv", "--config", str(config),
                           "--no-deploy", "--json-out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):   # 3: the gate failed, the timings are still real
        raise RuntimeError(proc.stderr[-3000:])
    summary = json.loads(out.read_text())
    return {"cli_wall_s": round(wall, 2), "train_s": summary["timings"]["train"], "cv_s": summary["timings"]["cv"],
            "flow_s": summary["timings"]["flow_total"], "cv_metrics": summary["cv_metrics"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[6000, 20000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "parallel.json")
    args = parser.parse_args()
    from serving.contract.processes import available_cpus
    from testkit.demo import make_demo

    results = {"cpus": available_cpus(), "rounds": args.rounds, "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        base = Path(tmp)
        configs = {runner: _config(base, runner) for runner in RUNNERS}
        for rows in args.rows:
            data = base / f"demo-{rows}.csv"
            make_demo(rows, seed=11).to_csv(data, index=False)
            runs: dict[str, list[dict]] = {runner: [] for runner in RUNNERS}
            for i in range(args.rounds):
                for runner in RUNNERS if i % 2 == 0 else reversed(RUNNERS):
                    run = release(base / f"home-{rows}-{runner}-{i}", data, configs[runner])
                    runs[runner].append(run)
                    print(f"{rows} rows, {runner}, round {i + 1}: train {run['train_s']:.1f} s, "
                          f"flow {run['flow_s']:.1f} s, cli {run['cli_wall_s']:.1f} s", flush=True)
            same = all(r["cv_metrics"] == runs["serial"][0]["cv_metrics"] for rs in runs.values() for r in rs)
            results["datasets"][rows] = {
                "runs": runs, "same_metrics": same,
                "median": {runner: {k: statistics.median(r[k] for r in rs) for k in ("train_s", "flow_s", "cli_wall_s")}
                           for runner, rs in runs.items()}}
            med = results["datasets"][rows]["median"]
            print(f"{rows} rows: train serial {med['serial']['train_s']:.1f} s vs dask {med['dask']['train_s']:.1f} s "
                  f"({med['serial']['train_s'] / med['dask']['train_s']:.2f}x); same metrics: {same}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(d["same_metrics"] for d in results["datasets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
