"""A newcomer's first ten minutes, timed step by step: a fresh clone, ``make install``, the README's three
commands on a CSV of their own (drafted contract, release, one scored row), ``make stop``; then ``make run``
(the demo) on the same checkout.

The CSV is generated (a churn table, 8,000 rows, about 3 % positives, columns the demo does not have), so
nothing is downloaded but the pinned packages ``make install`` fetches (from a local wheel directory where
pip is configured with one, as on the machine that made bench/results/first_use.json, or from PyPI: the
result says which, and whether pip's cache was warm). The release runs the shipped defaults, the
network search included, and serves on the local target's port 8000, which must be free.

    .venv/bin/python bench/first_use.py              # writes bench/results/first_use.json
    .venv/bin/python bench/first_use.py --keep /tmp/newcomer

README.md and docs/tutorial/your-own-data.md quote the figures; tests/test_docs_site.py holds them to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from testkit.labels import labels_at_rate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "first_use.json"
ROW = {"tenure_months": 3, "monthly_fee": 70.5, "support_calls": 4, "plan": "basic", "autopay": "no",
       "region": "east"}


def churn_csv(path: Path, rows: int = 8000, rate: float = 0.03, seed: int = 11) -> float:
    """Churn drawn from a logistic model of the columns, the intercept set for ``rate``; returns the rate."""
    rng = np.random.default_rng(seed)
    tenure, fee = rng.integers(1, 72, rows), rng.normal(45, 12, rows).round(2)
    calls, autopay = rng.poisson(1.2, rows), rng.random(rows) < 0.55
    plan = rng.choice(["basic", "plus", "pro"], rows, p=[0.5, 0.3, 0.2])
    z = -0.045 * tenure + 0.03 * (fee - 45) + 0.6 * calls - 0.7 * autopay + np.where(plan == "basic", 0.5, 0.0)
    churned, _p = labels_at_rate(z, rate, rng)
    pd.DataFrame({"tenure_months": tenure, "monthly_fee": fee, "support_calls": calls, "plan": plan,
                  "autopay": np.where(autopay, "yes", "no"), "region": rng.choice(["north", "south", "east", "west"],
                                                                                  rows),
                  "churned": np.where(churned, "yes", "no")}).to_csv(path, index=False)
    return float(churned.mean())


def _timed(steps: list[dict], name: str, command: list[str] | str, cwd: Path) -> str:
    started = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, shell=isinstance(command, str),
                         timeout=1800)
    seconds = round(time.perf_counter() - started, 1)
    steps.append({"step": name, "command": command if isinstance(command, str) else " ".join(command),
                  "seconds": seconds, "exit_code": out.returncode})
    print(f"{name:14} {seconds:7.1f} s  exit {out.returncode}", flush=True)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def walk(work: Path) -> dict:
    """The newcomer's steps in ``work``; returns the timings and what the release said."""
    steps: list[dict] = []
    pip_config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    local_wheels = os.environ.get("PIP_FIND_LINKS") or ("find-links" in pip_config and pip_config) or None
    pip_cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    warm_cache = pip_cache.exists() and any(pip_cache.iterdir())
    _timed(steps, "clone", ["git", "clone", "-q", str(ROOT), "repo"], work)
    repo = work / "repo"
    rate = churn_csv(repo / "churn.csv")
    _timed(steps, "make install", ["make", "install"], repo)
    drafted = _timed(steps, "infer-schema", ".venv/bin/python -m flows infer-schema --data churn.csv --target "
                                            "churned --positive yes --out configs/churn/", repo)
    following = drafted.split("then release it:\n")[1].splitlines()[0].strip()
    released = _timed(steps, "release", ".venv/bin/" + following, repo)
    answer = _timed(steps, "first answer", ["curl", "-s", "-X", "POST", "http://127.0.0.1:8000/predict", "-H",
                                            "Content-Type: application/json", "-d", json.dumps({"features": [ROW]})],
                    repo)
    _timed(steps, "make stop", ["make", "stop"], repo)
    _timed(steps, "make run", ["make", "run"], repo)       # the demo's release, on the same installed checkout
    _timed(steps, "make stop", ["make", "stop"], repo)
    cv = re.search(r"^cv: roc_auc (\S+)", released, flags=re.M)
    return {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "pip_cache_warm": warm_cache,
                        "pip_local_wheels": local_wheels},
            "data": {"rows": 8000, "positive_rate": round(rate, 4)}, "steps": steps,
            "own_data_seconds": round(sum(s["seconds"] for s in steps[:6]), 1),
            "release_roc_auc": float(cv.group(1)) if cv else None,
            "probability": json.loads(answer)["predictions"][0]["probability"],
            "date": time.strftime("%Y-%m-%d")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="first-use-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = walk(work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"clone to a served model of one's own: {result['own_data_seconds']} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
