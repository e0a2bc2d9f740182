"""Several server processes on one host: throughput with 1 and 2 workers, and how fast the workers agree.

Both servers run as hosts run them (``python -m serving``: gunicorn's master, SERVING_STATE_FILE), on
127.0.0.1, side by side; the load generator is testkit/load.py (keep-alive clients in threads, bounded
in count and time), in this process. Measured:

  1. requests/s and p50/p99 at 16 clients, single-row /predict, 1 worker vs 2 workers: ``--rounds``
     alternating rounds of ``--seconds`` each (median reported), with each worker's CPU seconds
     (how the connections spread) and the CPU other processes of the machine used meanwhile
  2. convergence of 2 workers, ``--trials`` times each: /load of a version no worker has loaded, and
     /default back: the admin call's answer time, and the last worker's apply time minus the time the
     desired state was written (the workers' own records, run/workers/<pid>.json)
  3. p99 of single-row requests during hot swaps under 16 clients, 2 workers: ``--swaps`` times /load of a
     version no worker holds, then /default back; "during" = from the admin call to 1 s after its answer

Usage: .venv/bin/python bench/bench_workers.py [--model-dir DIR] [--seconds 15] [--rounds 3] [--trials 20]
                                              [--out bench/results/workers.json]
Without --model-dir (a directory holding two or more exported versions) it trains two versions of the
demo model with the shipped configuration in a temporary pipeline home first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.contract.processes import children, cpu_seconds  # noqa: E402
from testkit.host_server import host_server  # noqa: E402
from testkit.load import Load, percentile, request  # noqa: E402
from testkit.procs import machine_busy_seconds  # noqa: E402

PY = sys.executable
TOKEN = "bench-token"
CLIENTS = 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def call(port: int, method: str, path: str, timeout: float = 180) -> tuple[int, dict]:
    status, raw = request(port, method, path, headers=AUTH, timeout=timeout)
    return status, json.loads(raw or b"null")


def server(model_dir: Path, version: str, workers: int, run: Path):
    return host_server(model_dir, version, workers, run, TOKEN)


def throughput(srv: dict, body: bytes, seconds: float) -> dict:
    workers = children(srv["master"])
    cpu0 = {p: cpu_seconds(p) for p in workers}
    busy0, own0 = machine_busy_seconds(), time.process_time()
    load = Load(srv["port"], body, clients=CLIENTS, max_requests=10**6, max_seconds=seconds, timeout=60)
    outcomes = load.run()
    busy, own = machine_busy_seconds() - busy0, time.process_time() - own0
    served = {p: round(cpu_seconds(p) - cpu0[p], 2) for p in workers}
    ok = load.latencies(only_ok=True)
    return {"requests": len(outcomes), "errors": len(outcomes) - len(ok), "seconds": round(load.elapsed, 2),
            "rps": round(load.rps(only_ok=True), 1), "p50_ms": round(percentile(ok, 50) * 1e3, 2),
            "p99_ms": round(percentile(ok, 99) * 1e3, 2), "worker_cpu_s": served,
            "load_generator_cpu_s": round(own, 2),
            "other_processes_cpu_s": round(max(0.0, busy - own - sum(served.values())), 2)}


def convergence(srv: dict) -> float:
    """The last worker's apply time minus the desired state's write time, for the current generation."""
    state = json.loads((srv["run"] / "serving-state.json").read_text())
    records = [json.loads(p.read_text()) for p in (srv["run"] / "workers").glob("*.json")]
    applied = [r["updated_at"] for r in records if r["generation"] == state["generation"]]
    assert len(applied) == len(children(srv["master"])), "a worker did not apply the generation"
    return max(applied) - state["written_at"]


def admin(srv: dict, path: str) -> tuple[float, dict]:
    start = time.monotonic()
    status, body = call(srv["port"], "POST", path)
    took = time.monotonic() - start
    if status != 200 or not body["workers"]["all_converged"]:
        raise RuntimeError(f"{path}: {status} {body}")
    return took, body


def summary(values: list[float]) -> dict:
    ms = [v * 1e3 for v in values]
    return {"n": len(ms), "median_ms": round(percentile(ms, 50), 1), "max_ms": round(max(ms), 1),
            "min_ms": round(min(ms), 1)}


def convergence_trials(srv: dict, model_dir: Path, a: str, b: str, trials: int) -> dict:
    load_answer, load_conv, default_answer, default_conv = [], [], [], []
    for _ in range(trials):
        took, _body = admin(srv, f"/load?model_dir={model_dir}&version={b}")          # nobody has b loaded
        load_answer.append(took)
        load_conv.append(convergence(srv))
        took, _body = admin(srv, f"/default?version={a}")
        default_answer.append(took)
        default_conv.append(convergence(srv))
        admin(srv, f"/unload?version={b}")
    return {"load": {"answer": summary(load_answer), "last_worker_after_write": summary(load_conv)},
            "default": {"answer": summary(default_answer), "last_worker_after_write": summary(default_conv)}}


def hot_swaps(srv: dict, model_dir: Path, body: bytes, a: str, b: str, swaps: int) -> dict:
    windows = []
    with Load(srv["port"], body, clients=CLIENTS, max_requests=10**6, max_seconds=60 + 40 * swaps,
              timeout=60) as load:
        deadline = time.monotonic() + 30
        while load.count() < 500 and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(swaps):
            # Each swap loads a version no worker holds (b), and swaps back (the default a), then unloads b.
            for path in (f"/load?model_dir={model_dir}&version={b}", f"/default?version={a}"):
                start = time.monotonic()
                admin(srv, path)
                windows.append((start, time.monotonic() + 1.0))
                time.sleep(3)          # steady traffic between swaps (a bench, not a test: nothing to wait on)
            admin(srv, f"/unload?version={b}")
    outcomes = load.stop()
    in_window = [any(s <= o.started <= e for s, e in windows) for o in outcomes]
    during = [o for o, inside in zip(outcomes, in_window) if inside]
    steady = [o for o, inside in zip(outcomes, in_window) if not inside]
    ok = lambda xs: [o.seconds for o in xs if o.status == 200]  # noqa: E731
    return {"swaps": swaps, "admin_changes_under_load": len(windows), "requests": len(outcomes),
            "errors": sum(o.status != 200 for o in outcomes),
            "during_swaps": {"requests": len(during), "p50_ms": round(percentile(ok(during), 50) * 1e3, 2),
                             "p99_ms": round(percentile(ok(during), 99) * 1e3, 2)},
            "steady": {"requests": len(steady), "p50_ms": round(percentile(ok(steady), 50) * 1e3, 2),
                       "p99_ms": round(percentile(ok(steady), 99) * 1e3, 2)},
            "versions_answered": sorted({o.version for o in outcomes if o.status == 200})}


def train_two(home: Path) -> Path:
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    for _ in range(2):
        subprocess.run([PY, "-m", "flows", "release", "--data", "data/demo.csv", "--schema", "configs/schema.yaml",
                        "--feature-list", "configs/feature_list.csv", "--no-deploy"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return home / "models" / "credit-risk"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="a directory holding two or more exported versions")
    parser.add_argument("--seconds", type=float, default=15.0, help="time bound of one throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating 1-worker / 2-worker rounds")
    parser.add_argument("--trials", type=int, default=20, help="convergence trials per admin change")
    parser.add_argument("--swaps", type=int, default=6, help="hot swaps under load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        model_dir = args.model_dir
        if model_dir is None:
            print(f"training two demo versions in {tmp / 'home'} ...", flush=True)
            model_dir = train_two(tmp / "home")
        model_dir = model_dir.resolve()
        versions = sorted((p.name for p in model_dir.iterdir() if p.name.isdigit()), key=int)
        a, b = versions[-2], versions[-1]
        golden = json.loads((model_dir / a / "metadata.json").read_text())["golden_examples"]
        body = json.dumps({"features": [golden[0]["features"]]}).encode()
        results: dict = {"cpus": len(os.sched_getaffinity(0)), "clients": CLIENTS, "model_dir": str(model_dir),
                         "versions": [a, b], "seconds_per_round": args.seconds, "rounds": args.rounds}
        with server(model_dir, a, 1, tmp / "one") as one, server(model_dir, a, 2, tmp / "two") as two:
            for srv in (one, two):      # warm-up
                Load(srv["port"], body, clients=CLIENTS, max_requests=50, max_seconds=30).run()
            rounds: dict[str, list] = {"1": [], "2": []}
            for r in range(args.rounds):
                for name, srv in (("1", one), ("2", two)) if r % 2 == 0 else (("2", two), ("1", one)):
                    print(f"round {r + 1}: {name} worker(s)", flush=True)
                    rounds[name].append(throughput(srv, body, args.seconds))
            results["throughput"] = {
                f"workers_{n}": {"rounds": rs, "median_rps": statistics.median(x["rps"] for x in rs),
                                 "median_p99_ms": statistics.median(x["p99_ms"] for x in rs)}
                for n, rs in rounds.items()}
            results["speedup_2_vs_1"] = round(results["throughput"]["workers_2"]["median_rps"]
                                              / results["throughput"]["workers_1"]["median_rps"], 2)
        with server(model_dir, a, 2, tmp / "sync") as srv:
            print(f"convergence: {args.trials} trials", flush=True)
            results["convergence_2_workers"] = convergence_trials(srv, model_dir, a, b, args.trials)
            print(f"hot swaps under {CLIENTS} clients", flush=True)
            results["hot_swap_2_workers"] = hot_swaps(srv, model_dir, body, a, b, args.swaps)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({k: results[k] for k in ("speedup_2_vs_1", "convergence_2_workers")}, indent=2))
        print(json.dumps(results["hot_swap_2_workers"], indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
