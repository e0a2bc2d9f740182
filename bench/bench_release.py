"""Release benchmark: end-to-end release time per stage, and SFTP throughput against scp.

1. `python -m flows release` (train → … → deploy to a local target → promote) on the demo data
   and on a 100,000-row synthetic dataset from the same generator; per-stage wall times from the
   run summary, and the orchestration overhead = flow wall time − Σ stage times.
2. A 200 MB bundle-sized file uploaded by our SSH transport (paramiko SFTP, pipelined, checked
   on the host) and by `scp` to the same throwaway sshd on 127.0.0.1.

Usage: .venv/bin/python bench/bench_release.py [--rows 100000] [--mb 200] [--out bench/results/release.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit.net import free_port

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("validate", "train", "calibrate", "export", "register", "gate", "deploy")


def release(home: Path, data: Path, targets: Path) -> dict:
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = home / "summary.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows", "release", "--data", str(data), "--schema",
                           "configs/schema.yaml", "--feature-list", "configs/feature_list.csv", "--targets",
                           str(targets), "--target", "bench", "--json-out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    summary = json.loads(out.read_text())
    t = summary["timings"]
    stage_sum = sum(t.get(s, 0.0) for s in STAGES)
    subprocess.run([sys.executable, "-m", "flows", "stop", "--target", "bench", "--targets", str(targets)],
                   cwd=ROOT, env=env, capture_output=True, timeout=120)
    return {"rows": summary["data"]["rows"], "cli_wall_s": round(wall, 2), "flow_s": t["flow_total"],
            "stages_s": {s: t.get(s) for s in STAGES}, "cv_s": t["cv"], "ensemble_s": t["ensemble"],
            "stage_sum_s": round(stage_sum, 3), "overhead_s": round(t["flow_total"] - stage_sum, 3),
            "overhead_pct": round(100 * (t["flow_total"] - stage_sum) / t["flow_total"], 2),
            "cv_metrics": summary["cv_metrics"], "training_rows_per_second": summary["training_rows_per_second"]}


def transfer(tmp: Path, megabytes: int) -> dict:
    from tasks.deploy.package import Bundle
    from tasks.deploy.targets import Target
    from tasks.deploy.transports.ssh import SSHTransport
    from testkit.sshd import start_sshd

    proc, info = start_sshd(tmp)
    try:
        blob = tmp / "big.zip"
        with open(blob, "wb") as fh:
            for _ in range(megabytes):
                fh.write(os.urandom(1 << 20))
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        bundle = Bundle(path=blob, sha256=digest, release="big", model_name="x", version="1", files={})
        target = Target(name="bench-ssh", transport="ssh", base_dir=tmp / "remote", user=info["user"],
                        ssh_port=info["port"], key_file=info["key"], known_hosts=info["known_hosts"])
        runs = {"ours_sftp": [], "scp": []}
        for _ in range(3):
            shutil.rmtree(tmp / "remote", ignore_errors=True)
            start = time.perf_counter()
            SSHTransport(target).put(bundle)      # includes the SHA-256 check on the host
            runs["ours_sftp"].append(time.perf_counter() - start)
            (tmp / "scp-dest").mkdir(exist_ok=True)
            start = time.perf_counter()
            subprocess.run(["scp", "-q", "-P", str(info["port"]), "-i", str(info["key"]), "-o", "BatchMode=yes",
                            "-o", f"UserKnownHostsFile={info['known_hosts']}", str(blob),
                            f"{info['user']}@127.0.0.1:{tmp / 'scp-dest' / 'big.zip'}"], check=True, timeout=600)
            runs["scp"].append(time.perf_counter() - start)
        best = {k: min(v) for k, v in runs.items()}
        return {"megabytes": megabytes, "seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
                "mb_per_s": {k: round(megabytes / v, 1) for k, v in best.items()},
                "ratio_vs_scp": round(best["scp"] / best["ours_sftp"], 2)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--skip-release", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "release.json")
    args = parser.parse_args()
    from testkit.demo import make_demo

    tmp = Path(tempfile.mkdtemp(prefix="bench-release-"))
    results: dict = {"cpus": os.cpu_count()}
    try:
        if not args.skip_release:
            big = tmp / "synthetic.csv"
            make_demo(n_rows=args.rows, seed=11).to_csv(big, index=False)
            for name, data in (("demo", ROOT / "data" / "demo.csv"), (f"synthetic_{args.rows}", big)):
                home = tmp / name
                home.mkdir()
                targets = home / "targets.yaml"
                targets.write_text(f"targets:\n  bench:\n    base_dir: target\n    port: {free_port()}\n")
                print(f"[{name}] release ...", flush=True)
                results[name] = release(home, data, targets)
                print(json.dumps(results[name]), flush=True)
        print(f"[transfer] {args.mb} MB ...", flush=True)
        (tmp / "ssh").mkdir()
        results["transfer"] = transfer(tmp / "ssh", args.mb)
        print(json.dumps(results["transfer"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
