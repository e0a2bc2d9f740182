"""Serving benchmark: our server against `mlflow models serve` on the same registered version.

Both servers are driven by the same load generator (Python threads, one keep-alive
connection each, bounded in count and time) in the same run, on 127.0.0.1 only:

  1. one client, single-row requests       latency p50/p99, requests/s
  2. 8 concurrent clients, single-row       requests/s, latency p50/p99
  3. one 10,000-row request                 latency (median of 5)
  4. memory (RSS of the server process tree), ours with two versions loaded

Usage: .venv/bin/python bench/bench_serving.py [--home DIR] [--seconds 15] [--out bench/results/serving.json]
Without --home it trains two versions of the demo model in a temporary pipeline home first.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from testkit.net import free_port

ROOT = Path(__file__).resolve().parent.parent

PY = sys.executable
TOKEN = "bench-token"


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server on {port} not ready after {timeout}s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            continue
    return round(total / 1024, 1)


def drive(port: int, path: str, body: bytes, clients: int, max_requests: int, max_seconds: float) -> dict:
    """Send ``body`` from ``clients`` threads until ``max_requests`` in all or ``max_seconds`` passed."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    per_client = max(1, max_requests // clients)
    deadline = time.monotonic() + max_seconds

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            lat[i].append(time.perf_counter() - t0)
            errors[i] += not ok
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    flat = sorted(x for xs in lat for x in xs)
    q = statistics.quantiles(flat, n=100) if len(flat) > 1 else [flat[0]] * 99
    return {"requests": len(flat), "errors": sum(errors), "seconds": round(elapsed, 2),
            "rps": round(len(flat) / elapsed, 1), "p50_ms": round(q[49] * 1e3, 2), "p99_ms": round(q[98] * 1e3, 2)}


def scenarios(port: int, path: str, row_body: bytes, big_body: bytes, seconds: float, name: str) -> dict:
    print(f"[{name}] warm-up", flush=True)
    drive(port, path, row_body, 1, 50, 30)
    print(f"[{name}] 1 client", flush=True)
    one = drive(port, path, row_body, 1, 5000, seconds)
    print(f"[{name}] 8 clients", flush=True)
    eight = drive(port, path, row_body, 8, 40000, seconds)
    print(f"[{name}] 10,000 rows", flush=True)
    big = [drive(port, path, big_body, 1, 1, 120)["p50_ms"] for _ in range(5)]
    return {"one_client": one, "eight_clients": eight, "rows_10k_ms": round(statistics.median(big), 1),
            "rows_10k_all_ms": big}


def prepare_home(home: Path) -> None:
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    for _ in range(2):   # two versions, for the memory figure with two loaded
        subprocess.run([PY, "-m", "flows", "release", "--data", "data/demo.csv", "--schema", "configs/schema.yaml",
                        "--feature-list", "configs/feature_list.csv", "--no-deploy"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a pipeline home with at least two released versions")
    parser.add_argument("--model-name", default="credit-risk")
    parser.add_argument("--seconds", type=float, default=15.0, help="time bound per load scenario")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    tmp = None
    home = args.home
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
        home = tmp / "home"
        print(f"training two demo versions in {home} ...", flush=True)
        prepare_home(home)
    home = home.resolve()
    models = home / "models" / args.model_name
    versions = sorted((p.name for p in models.iterdir() if p.name.isdigit()), key=int)
    v_old, v_new = versions[-2], versions[-1]
    meta = json.loads((models / v_new / "metadata.json").read_text())
    rows = [g["features"] for g in meta["golden_examples"]]
    big_rows = [rows[i % len(rows)] for i in range(10_000)]
    tracking = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    registered = next(v for v in client.search_model_versions(f"name = '{args.model_name}'")
                      if v.tags.get("export_version") == v_new)
    results: dict = {"model": args.model_name, "export_version": v_new,
                     "registered_version": str(registered.version), "cpus": os.cpu_count()}

    # ---- ours
    port = free_port()
    env = {**os.environ, "SERVING_MODEL_ROOT": str(home / "models"), "SERVING_MODEL_DIR": str(models),
           "SERVING_MODEL_VERSION": v_new, "SERVING_ADMIN_TOKEN": TOKEN, "TF_CPP_MIN_LOG_LEVEL": "3"}
    ours = subprocess.Popen([PY, "-m", "serving", "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, "/health", ours)
        results["ours_rss_mb_one_version"] = rss_mb(ours.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", f"/load?model_dir={models}&version={v_old}&default=false",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().status == 200
        results["ours_rss_mb_two_versions"] = rss_mb(ours.pid)
        results["ours"] = scenarios(port, "/predict", json.dumps({"features": rows[:1]}).encode(),
                                    json.dumps({"features": big_rows}).encode(), args.seconds, "ours")
        results["ours_rss_mb_after_load"] = rss_mb(ours.pid)
    finally:
        ours.terminate()
        ours.wait(timeout=30)

    # ---- mlflow models serve, same registered version
    port = free_port()
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    peer = subprocess.Popen([str(Path(PY).with_name("mlflow")), "models", "serve", "-m",
                             f"models:/{args.model_name}/{registered.version}", "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, "/ping", peer)
        results["mlflow_rss_mb"] = rss_mb(peer.pid)
        frame_rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in rows]
        big_frame = [frame_rows[i % len(frame_rows)] for i in range(10_000)]
        one = json.dumps({"dataframe_records": frame_rows[:1]}).replace("NaN", "null").encode()
        big = json.dumps({"dataframe_records": big_frame}).replace("NaN", "null").encode()
        results["mlflow"] = scenarios(port, "/invocations", one, big, args.seconds, "mlflow")
        results["mlflow_rss_mb_after_load"] = rss_mb(peer.pid)
    finally:
        if peer.poll() is None:
            os.killpg(peer.pid, 15)
            peer.wait(timeout=30)

    o, m = results["ours"], results["mlflow"]
    results["throughput_ratio_8_clients"] = round(o["eight_clients"]["rps"] / max(m["eight_clients"]["rps"], 1e-9), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print()
    print("| scenario | ours | mlflow models serve |")
    print("|---|---|---|")
    for label, key in (("1 client", "one_client"), ("8 clients", "eight_clients")):
        for metric in ("rps", "p50_ms", "p99_ms", "errors", "requests"):
            print(f"| {label}: {metric} | {o[key][metric]} | {m[key][metric]} |")
    print(f"| one 10,000-row request, ms (median of 5) | {o['rows_10k_ms']} | {m['rows_10k_ms']} |")
    print(f"| RSS MB (ours: two versions loaded) | {results['ours_rss_mb_two_versions']} | "
          f"{results['mlflow_rss_mb']} |")
    print(f"| throughput ratio, 8 clients | {results['throughput_ratio_8_clients']}x | |")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
