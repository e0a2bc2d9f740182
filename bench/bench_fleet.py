"""Fleet benchmark on namespaced hosts (testkit/netns.py: network namespaces, each with its own address and sshd).

Every host runs its server with this interpreter (``python`` = sys.executable: no environment is built) and
one worker process; transfers go over SSH. Two versions of the demo model are released (trained, gated,
registered, deployed nowhere) first, with the shipped configuration, inside a temporary Prefect server.

  1. Release time to 1, 3 and 10 hosts: ``deploy_flow`` of a registered version to an all-at-once fleet
     (up to 16 transfers at a time): package, transfer, unpack, switch, smoke test on every host, promote,
     the check after promotion. Twice per size: version 1 to fresh hosts (each server starts), then version 2
     to the hosts serving 1 (each server hot-loads it). Goal: 10 hosts within 3x one host.
  2. Through nginx (on 127.0.0.1, upstreams the hosts' addresses) with three hosts: requests/s and p99 at
     8 pooled keep-alive clients, single-row /predict, for ``--seconds``.
  3. Failed requests during a rolling release (batch 1, each host drained while it swaps) of three hosts
     under the same 8 clients. Goal: 0. Resends of requests that met nginx closing an idle kept-alive
     connection at a reload (nothing answered; pooled clients send those again) are counted apart.

Every load is bounded in requests and seconds. Needs root, iproute2, sshd and nginx.

Usage: .venv/bin/python bench/bench_fleet.py [--sizes 1,3,10] [--seconds 15] [--out bench/results/fleet.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-fleet-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.pop("MLFLOW_TRACKING_URI", None)

from testkit.fleet import Fleet, bodies, register_versions  # noqa: E402
from testkit.load import Load, percentile  # noqa: E402

CLIENTS = 8
MAX_REQUESTS = 200_000      # per client: the time bound ends a load first


def hosts_as_targets(hosts, base: Path) -> dict[str, dict]:
    return {f"host{h.index + 1}": {k: v for k, v in h.target(base_dir=base / f"host{h.index + 1}",
                                                               connect_timeout_s=5).items() if k != "name"}
            for h in hosts}


def release_times(env: dict, hosts, size: int, tmp: Path) -> dict:
    """deploy_flow of version 1 to ``size`` fresh hosts, then of version 2 to them; wall seconds of each."""
    work = tmp / f"release-{size}"
    work.mkdir()
    fleet = Fleet(env, hosts_as_targets(hosts[:size], work), work)
    fleet.write("all-at-once")
    out = {}
    try:
        for version, what in (("1", "cold_start_s"), ("2", "hot_load_s")):
            started = time.perf_counter()
            result = fleet.deploy("setup", version)
            out[what] = round(time.perf_counter() - started, 2)
            assert result["fleet"]["done"] == fleet.names, result["fleet"]
        assert set(fleet.served().values()) == {env["exports"]["2"]}
    finally:
        fleet.stop()
    print(f"[release] {size} host(s): {out}", flush=True)
    return out


def measure(port: int, body: list[bytes], seconds: float) -> dict:
    with Load(port=port, body=body, clients=CLIENTS, max_requests=MAX_REQUESTS, max_seconds=seconds,
              pooled=True) as load:
        outcomes = load.wait()
    ok = [o for o in outcomes if o.status == 200]
    span = max(o.started + o.seconds for o in outcomes) - min(o.started for o in outcomes)
    return {"requests": len(outcomes), "failed": len(outcomes) - len(ok), "rps": round(len(ok) / span, 1),
            "p50_ms": round(percentile([o.seconds * 1e3 for o in ok], 50), 2),
            "p99_ms": round(percentile([o.seconds * 1e3 for o in ok], 99), 2), "stale_resends": load.stale}


def through_nginx(env: dict, hosts, tmp: Path, seconds: float) -> dict:
    """Throughput through nginx to three hosts, then a rolling release under load."""
    work = tmp / "nginx"
    work.mkdir()
    fleet = Fleet(env, hosts_as_targets(hosts[:3], work), work)
    fleet.write("rolling", batch_size=1)
    body = bodies(env)
    out: dict = {}
    try:
        fleet.deploy("setup", "1")
        with fleet.nginx():
            out["nginx_3_hosts"] = measure(fleet.port, body, seconds)
            print(f"[nginx] 3 hosts: {out['nginx_3_hosts']}", flush=True)
            with Load(port=fleet.port, body=body, clients=CLIENTS, max_requests=MAX_REQUESTS, max_seconds=600,
                      pooled=True) as load:
                deadline = time.monotonic() + 60
                while load.count() < 50 and time.monotonic() < deadline:    # traffic flows before the release
                    time.sleep(0.05)
                started = time.perf_counter()
                fleet.deploy("web", "2")
                seconds_release = time.perf_counter() - started
                ended = time.monotonic()
                outcomes = load.stop()
            during = [o for o in outcomes if o.started <= ended]
            ok = [o for o in during if o.status == 200]
            out["rolling_release"] = {
                "seconds": round(seconds_release, 1), "requests": len(during), "failed": len(during) - len(ok),
                "failed_statuses": sorted({o.status for o in during if o.status != 200}),
                "p99_ms": round(percentile([o.seconds * 1e3 for o in ok], 99), 2), "stale_resends": load.stale,
                "versions_answered": sorted({o.version for o in ok})}
            print(f"[nginx] rolling release: {out['rolling_release']}", flush=True)
    finally:
        fleet.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,3,10", help="fleet sizes for the release times")
    parser.add_argument("--seconds", type=float, default=15, help="each throughput measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fleet.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    import pandas as pd
    from prefect.testing.utilities import prefect_test_harness

    from testkit import netns

    if reason := netns.unavailable():
        raise SystemExit(f"bench_fleet: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    results: dict = {"cpus": os.cpu_count(), "clients": CLIENTS, "workers_per_host": 1,
                     "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with prefect_test_harness(server_startup_timeout=120), netns.netns_hosts(max(sizes + [3]), tmp) as hosts:
            print("[setup] releasing two versions (training with configs/pipeline.yaml) ...", flush=True)
            started = time.perf_counter()
            env = register_versions(tmp / "registry", pd.read_csv(ROOT / "data" / "demo.csv"),
                                    (ROOT / "configs" / "pipeline.yaml").read_text())
            print(f"[setup] {time.perf_counter() - started:.0f} s", flush=True)
            os.environ["PIPELINE_HOME"] = str(env["home"])
            results["release"] = {str(n): release_times(env, hosts, n, tmp) for n in sizes}
            one, most = results["release"][str(min(sizes))], results["release"][str(max(sizes))]
            results["release"]["ratio_largest_to_one"] = {
                k: round(most[k] / one[k], 2) for k in ("cold_start_s", "hot_load_s")}
            results["through_nginx"] = through_nginx(env, hosts, tmp, args.seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
