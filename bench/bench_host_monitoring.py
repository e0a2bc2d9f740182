"""Host-wide monitoring: what it costs /predict, and how long a /monitoring read takes with 2 workers.

Both servers run as hosts run them (``python -m serving``: gunicorn's master, SERVING_STATE_FILE, 1
worker), side by side on 127.0.0.1: "before" is the code of ``--before`` (a checkout without host-wide
monitoring: per-process Prometheus values, no publication, scored rows in memory), "after" this tree
(multiprocess Prometheus files, windows published every second, scored rows in SQLite). ``--rounds``
alternating rounds (the order flips each round), each:

  1. one client, keep-alive, ``--requests`` single-row /predict: p50 and p99
  2. 8 clients for ``--seconds``: requests/s

Then this tree with 2 workers: after 2,000 requests on 8 clients, ``--reads`` reads of /monitoring/window
(the last hour), /monitoring/summary and /metrics, each on a new connection: median and max.

Usage: .venv/bin/python bench/bench_host_monitoring.py --model-dir DIR --before CHECKOUT [--rounds 4]
                                                       [--out bench/results/host_monitoring.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.host_server import host_server  # noqa: E402
from testkit.load import Load, percentile, request  # noqa: E402

PY = sys.executable
TOKEN = "bench-token"


@contextmanager
def server(code: Path, model_dir: Path, workers: int, run: Path):
    with host_server(model_dir, "1", workers, run, TOKEN, code=code) as srv:
        yield srv["port"]


def one_client(port: int, body: bytes, requests: int) -> dict:
    load = Load(port, body, clients=1, max_requests=requests, max_seconds=120)
    outcomes = load.run()
    ok = load.latencies(only_ok=True)
    return {"p50_ms": round(percentile(ok, 50) * 1e3, 3), "p99_ms": round(percentile(ok, 99) * 1e3, 3),
            "errors": len(outcomes) - len(ok)}


def eight_clients(port: int, body: bytes, seconds: float) -> dict:
    load = Load(port, body, clients=8, max_requests=10**6, max_seconds=seconds, timeout=60)
    outcomes = load.run()
    return {"rps": round(load.rps(only_ok=True), 1), "errors": len(outcomes) - len(load.latencies(only_ok=True))}


def reads(port: int, n: int) -> dict:
    out = {}
    for path in ("/monitoring/window", "/monitoring/summary", "/metrics"):
        took = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, _raw = request(port, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            took.append(time.perf_counter() - t0)
            assert status == 200, path
        ms = [t * 1e3 for t in took]
        out[path] = {"median_ms": round(percentile(ms, 50), 2), "max_ms": round(max(ms), 2), "n": n}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True, help="a checkout without host-wide monitoring")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    golden = json.loads((args.model_dir / "1" / "metadata.json").read_text())["golden_examples"]
    body = json.dumps({"features": [golden[0]["features"]]}).encode()
    results: dict = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        with server(args.before, args.model_dir, 1, Path(tmp) / "before") as before, \
                server(ROOT, args.model_dir, 1, Path(tmp) / "after") as after:
            ports = {"before": before, "after": after}
            for port in ports.values():           # warm both
                one_client(port, body, 100)
            for r in range(args.rounds):
                for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    results[name].append({**one_client(ports[name], body, args.requests),
                                          **eight_clients(ports[name], body, args.seconds)})
        with server(ROOT, args.model_dir, 2, Path(tmp) / "two") as two:
            eight_clients(two, body, 3)
            results["two_workers_reads"] = reads(two, args.reads)
    for name in ("before", "after"):
        rounds = results[name]
        results[f"{name}_median"] = {k: round(statistics.median(r[k] for r in rounds), 3)
                                     for k in ("p50_ms", "p99_ms", "rps")}
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
                          "note": "shared machine: other jobs ran meanwhile"}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
