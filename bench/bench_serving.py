"""Serving benchmark: our server against KServe's Python ModelServer and `mlflow models serve`.

The same exported version (SavedModel and calibrator) behind each, one server process each: ours as
hosts run it (`python -m serving`: gunicorn master + one uvicorn worker), KServe 0.21 with workers=1
(bench/kserve_model.py, in its own venv bench/.venv-kserve, created here on first use) and MLflow's
server on the registered version. One load generator, testkit/load.py (Python threads, one keep-alive
connection each, bounded in count and time), 127.0.0.1 only; p50/p99 by nearest rank
(testkit.load.percentile). Per round and server, in turn:

  1. one client, single-row requests       latency p50/p99, requests/s
  2. 8 concurrent clients, single-row       requests/s, latency p50/p99
  3. one 1,000-row request                  latency (median of 7)

Rounds alternate between the servers (who goes first rotates); figures are the median over the
rounds with the spread beside them. Memory: RSS of each server's process tree and of its largest
process, after the rounds.

Usage: .venv/bin/python bench/bench_serving.py [--home DIR] [--rounds 5] [--seconds 8] [--peers kserve,mlflow]
       [--baseline-root DIR]   (a `git worktree add DIR COMMIT` of an earlier commit, run beside as ours-before)
Without --home it trains two versions of the demo model in a temporary pipeline home first.
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
from dataclasses import dataclass
from pathlib import Path

from serving.contract.processes import children, rss_bytes
from testkit.load import Load, percentile, request
from testkit.net import free_port

ROOT = Path(__file__).resolve().parent.parent

PY = sys.executable
TOKEN = "bench-token"
KSERVE_VENV = ROOT / "bench" / ".venv-kserve"
KSERVE_SPEC = "kserve==0.21.*"


def pinned(package: str) -> str:
    """``package==VERSION`` as constraints.txt pins it (the peer runs the same TensorFlow and numpy as we do)."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name.lower().replace("_", "-") == package.lower().replace("_", "-"):
            return f"{package}=={version}"
    raise SystemExit(f"constraints.txt pins no {package}")


def kserve_python() -> Path:
    """The KServe venv's python, created on first use: kserve plus our pinned TensorFlow and numpy only
    (no scikit-learn, as a user who installs KServe for a TensorFlow model gets)."""
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {KSERVE_VENV} ({KSERVE_SPEC}, {pinned('tensorflow-cpu')}) ...", flush=True)
        subprocess.run([PY, "-m", "venv", str(KSERVE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", KSERVE_SPEC, pinned("tensorflow-cpu"),
                        pinned("numpy")], check=True)
    return python


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if request(port, "GET", path, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server on {port} not ready after {timeout}s")


def drive(port: int, path: str, body: bytes, clients: int, max_requests: int, max_seconds: float) -> dict:
    """Send ``body`` from ``clients`` keep-alive clients until ``max_requests`` in all or ``max_seconds`` passed
    (testkit/load.py; latencies and requests/s over every request, failed ones included)."""
    load = Load(port, body, clients=clients, max_requests=max(1, max_requests // clients), max_seconds=max_seconds,
                timeout=60, path=path, versions=False)
    outcomes = load.run()
    latencies = load.latencies()
    return {"requests": len(outcomes), "errors": sum(o.status != 200 for o in outcomes),
            "seconds": round(load.elapsed, 2), "rps": round(load.rps(), 1),
            "p50_ms": round(percentile(latencies, 50) * 1e3, 2), "p99_ms": round(percentile(latencies, 99) * 1e3, 2)}


def prepare_home(home: Path) -> None:
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    for _ in range(2):   # two versions, for the memory figure with two loaded
        subprocess.run([PY, "-m", "flows", "release", "--data", "data/demo.csv", "--schema", "configs/schema.yaml",
                        "--feature-list", "configs/feature_list.csv", "--no-deploy"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def median_of(results: list[dict]) -> dict:
    """Per metric, the median over the rounds, and the spread (min-max) beside it."""
    out: dict = {}
    for key in results[0]:
        values = [r[key] for r in results]
        if all(isinstance(v, int | float) for v in values):
            out[key] = round(statistics.median(values), 2)
            out[f"{key}_range"] = [min(values), max(values)]
    return out


def one_round(port: int, path: str, row_body: bytes, big_body: bytes, seconds: float, name: str) -> dict:
    print(f"[{name}] 1 client, 8 clients, 1,000 rows", flush=True)
    drive(port, path, row_body, 1, 50, 30)      # warm the connection and the server's caches
    one = drive(port, path, row_body, 1, 20_000, seconds)
    eight = drive(port, path, row_body, 8, 80_000, seconds)
    big = [drive(port, path, big_body, 1, 1, 120) for _ in range(7)]
    return {"one_p50_ms": one["p50_ms"], "one_p99_ms": one["p99_ms"], "one_rps": one["rps"],
            "eight_rps": eight["rps"], "eight_p50_ms": eight["p50_ms"], "eight_p99_ms": eight["p99_ms"],
            "rows_1k_ms": percentile([b["p50_ms"] for b in big], 50),
            "errors": one["errors"] + eight["errors"] + sum(b["errors"] for b in big),
            "requests": one["requests"] + eight["requests"] + len(big)}


def memory(pid: int) -> dict:
    """RSS of the whole process tree and of its largest process (ours: the worker; the master is small)."""
    each = {p: round(rss_bytes([p]) / 2**20, 1) for p in [pid, *children(pid, recursive=True)]}
    return {"tree_mb": round(sum(each.values()), 1), "largest_mb": max(each.values()), "processes": len(each)}


class Server:
    def __init__(self, name: str, argv: list[str], env: dict, port: int, ready: str, path: str,
                 row_body: bytes, big_body: bytes, cwd: Path = ROOT) -> None:
        self.name, self.port, self.ready, self.path = name, port, ready, path
        self.row_body, self.big_body = row_body, big_body
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.rounds: list[dict] = []
        self.rss: list[dict] = []

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


def check_same_answers(ours: Server, peer: Server, rows: list[dict], key: str) -> float:
    """Largest |probability difference| between the two servers on the golden rows (same model, same calibrator)."""
    def post(server: Server, body: dict) -> dict:
        answer = json.loads(request(server.port, "POST", server.path, json.dumps(body).encode())[1])
        if "predictions" not in answer:
            raise RuntimeError(f"{server.name}: {answer}")
        return answer

    a = [p["probability"] for p in post(ours, {"features": rows})["predictions"]]
    b = post(peer, {key: rows})["predictions"]
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Release:
    """The two newest exported versions of the model, and the rows every server is sent."""
    home: Path
    models: Path
    old: str
    new: str
    rows: list[dict]          # the golden examples
    big_rows: list[dict]      # 1,000 of them, repeated


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a pipeline home with at least two released versions")
    parser.add_argument("--model-name", default="credit-risk")
    parser.add_argument("--seconds", type=float, default=8.0, help="time bound per load scenario and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peers", default="kserve,mlflow", help="comma-separated: kserve, mlflow")
    parser.add_argument("--baseline-root", type=Path,
                        help="a checkout of an earlier commit: its server runs too, as 'ours-before' (git worktree)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    return parser.parse_args()


def released(home: Path, model_name: str) -> Release:
    home = home.resolve()
    models = home / "models" / model_name
    versions = sorted((p.name for p in models.iterdir() if p.name.isdigit()), key=int)
    meta = json.loads((models / versions[-1] / "metadata.json").read_text())
    rows = [g["features"] for g in meta["golden_examples"]]
    return Release(home, models, versions[-2], versions[-1], rows, [rows[i % len(rows)] for i in range(1_000)])


def start_ours(release: Release, base_env: dict, baseline_root: Path | None) -> list[Server]:
    """Ours as hosts run it (gunicorn master + one uvicorn worker: uvloop, httptools), and with
    ``baseline_root`` the server of that checkout beside it, started the same way from its root."""
    env = {**base_env, "SERVING_MODEL_ROOT": str(release.home / "models"), "SERVING_MODEL_DIR": str(release.models),
           "SERVING_MODEL_VERSION": release.new, "SERVING_ADMIN_TOKEN": TOKEN,
           "SERVING_STATE_FILE": str(release.home / "bench-serving-state.json"),
           "SERVING_WORKERS": "1"}   # one server process, as KServe's --workers 1: hosts default to one per CPU
    row_body = json.dumps({"features": release.rows[:1]}).encode()
    big_body = json.dumps({"features": release.big_rows}).encode()
    port = free_port()
    servers = [Server("ours", [PY, "-m", "serving", "--port", str(port), "--log-level", "warning"], env, port,
                      "/health", "/predict", row_body, big_body)]
    if baseline_root is not None:
        port = free_port()
        env = {**env, "SERVING_STATE_FILE": str(release.home / "bench-serving-state-before.json"),
               "PYTHONPATH": str(baseline_root.resolve())}
        servers.append(Server("ours-before", [PY, "-m", "serving", "--port", str(port), "--log-level", "warning"],
                              env, port, "/health", "/predict", row_body, big_body, cwd=baseline_root.resolve()))
    return servers


def start_kserve(release: Release, base_env: dict, model_name: str) -> Server:
    port = free_port()
    env = {**base_env, "PYTHONPATH": str(ROOT)}
    return Server("kserve", [str(kserve_python()), str(ROOT / "bench" / "kserve_model.py"),
                             "--model_name", model_name, "--version_dir", str(release.models / release.new),
                             "--http_port", str(port), "--workers", "1", "--enable_grpc", "false",
                             "--enable_latency_logging", "false", "--quiet"], env, port,
                  f"/v1/models/{model_name}", f"/v1/models/{model_name}:predict",
                  json.dumps({"instances": release.rows[:1]}).encode(),
                  json.dumps({"instances": release.big_rows}).encode())


def start_mlflow(release: Release, base_env: dict, model_name: str) -> Server:
    from mlflow import MlflowClient

    tracking = f"sqlite:///{release.home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    registered = next(v for v in client.search_model_versions(f"name = '{model_name}'")
                      if v.tags.get("export_version") == release.new)
    port = free_port()
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH.
    env = {**base_env, "MLFLOW_TRACKING_URI": tracking,
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    frame_rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in release.rows]
    big_frame = [frame_rows[i % len(frame_rows)] for i in range(1_000)]
    return Server("mlflow", [str(Path(PY).with_name("mlflow")), "models", "serve", "-m",
                             f"models:/{model_name}/{registered.version}", "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port)], env, port, "/ping", "/invocations",
                  json.dumps({"dataframe_records": frame_rows[:1]}).replace("NaN", "null").encode(),
                  json.dumps({"dataframe_records": big_frame}).replace("NaN", "null").encode())


def start_servers(args: argparse.Namespace, release: Release, peers: list[str], servers: list[Server]) -> None:
    """Start ours (and ours-before), then each peer, appending each to ``servers`` as it starts (the caller
    stops them all, also those started before one failed)."""
    base_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    servers += start_ours(release, base_env, args.baseline_root)
    if "kserve" in peers:
        servers.append(start_kserve(release, base_env, args.model_name))
    if "mlflow" in peers:
        servers.append(start_mlflow(release, base_env, args.model_name))


def run_rounds(servers: list[Server], rounds: int, seconds: float) -> None:
    """Memory at the start, then ``rounds`` rounds of every server, each followed by its memory."""
    for server in servers:
        server.rss.append(memory(server.proc.pid))
    for r in range(rounds):
        # Alternate, and rotate who goes first, so a neighbour's burst of load hits every server alike.
        for server in servers[r % len(servers):] + servers[:r % len(servers)]:
            server.rounds.append(one_round(server.port, server.path, server.row_body, server.big_body,
                                           seconds, f"{server.name} round {r + 1}"))
            server.rss.append(memory(server.proc.pid))


def measure(servers: list[Server], release: Release, args: argparse.Namespace, results: dict) -> None:
    """Same answers as KServe, the rounds, and ours' memory once a second version is loaded, into ``results``."""
    for server in servers:
        wait_ready(server.port, server.ready, server.proc)
    kserve = next((s for s in servers if s.name == "kserve"), None)
    if kserve is not None:
        results["max_abs_probability_difference_ours_vs_kserve"] = check_same_answers(servers[0], kserve,
                                                                                      release.rows, "instances")
    run_rounds(servers, args.rounds, args.seconds)
    for server in servers:
        results[server.name] = {"median": median_of(server.rounds), "rounds": server.rounds,
                                "rss_at_start": server.rss[0], "rss_after_rounds": server.rss[-1]}
    ours = servers[0]
    status, _ = request(ours.port, "POST", f"/load?model_dir={release.models}&version={release.old}&default=false",
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert status == 200
    results["ours"]["rss_two_versions"] = memory(ours.proc.pid)


def against_kserve(results: dict) -> dict:
    """The issue's goals, ours against KServe."""
    o, k = results["ours"]["median"], results["kserve"]["median"]
    return {"rps_8_clients_ratio": round(o["eight_rps"] / k["eight_rps"], 2),
            "goal_rps_ratio_1_3": o["eight_rps"] >= 1.3 * k["eight_rps"],
            "goal_p50_at_or_below": o["one_p50_ms"] <= k["one_p50_ms"],
            "goal_1k_rows_at_or_below": o["rows_1k_ms"] <= k["rows_1k_ms"],
            "goal_memory_at_or_below_worker": results["ours"]["rss_after_rounds"]["largest_mb"]
            <= results["kserve"]["rss_after_rounds"]["tree_mb"],
            "goal_memory_at_or_below_tree": results["ours"]["rss_after_rounds"]["tree_mb"]
            <= results["kserve"]["rss_after_rounds"]["tree_mb"]}


def print_table(results: dict, names: list[str], rounds: int) -> None:
    print()
    print(f"| median of {rounds} rounds (min-max) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, key in (("1 client p50 ms", "one_p50_ms"), ("1 client p99 ms", "one_p99_ms"),
                       ("1 client req/s", "one_rps"), ("8 clients req/s", "eight_rps"),
                       ("8 clients p99 ms", "eight_p99_ms"), ("1,000-row request ms", "rows_1k_ms"),
                       ("failed requests", "errors")):
        cells = []
        for n in names:
            m = results[n]["median"]
            lo, hi = m[f"{key}_range"]
            cells.append(f"{m[key]} ({lo}-{hi})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in (("RSS MB, process tree", "tree_mb"), ("RSS MB, largest process", "largest_mb"),
                       ("processes", "processes")):
        print(f"| {label} | " + " | ".join(str(results[n]["rss_after_rounds"][key]) for n in names) + " |")
    if "vs_kserve" in results:
        print(json.dumps(results["vs_kserve"]))


def main() -> int:
    args = parse_args()
    tmp = None
    home = args.home
    if home is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
        home = tmp / "home"
        print(f"training two demo versions in {home} ...", flush=True)
        prepare_home(home)
    release = released(home, args.model_name)
    peers = [p for p in args.peers.split(",") if p]
    results: dict = {"model": args.model_name, "export_version": release.new, "cpus": os.cpu_count(),
                     "rounds": args.rounds, "seconds_per_scenario": args.seconds}
    servers: list[Server] = []
    try:
        start_servers(args, release, peers, servers)
        measure(servers, release, args, results)
    finally:
        for server in servers:
            server.stop()
    if "kserve" in results:
        results["vs_kserve"] = against_kserve(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results, [s.name for s in servers], args.rounds)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
