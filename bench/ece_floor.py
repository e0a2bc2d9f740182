"""What ECE a perfectly calibrated model would show on each benchmark set: the noise floor of the estimator.

For each set kept by ``bench_training.py --workdir DIR`` (its ``scores.npz``: labels, out-of-fold raw
scores, folds), the pipeline's own ``auto`` calibration gives the cross-fitted probabilities p that the
benchmark reports. Labels drawn as Bernoulli(p) are what a model whose probabilities are exactly right
would meet; the 10-bin equal-width ECE of p against those labels, over many draws, is the ECE such a
model shows on that many rows with that spread of scores. A measured ECE inside that distribution cannot
be told from perfect calibration.

    .venv/bin/python bench/ece_floor.py --workdir /tmp/keep [--draws 300] [--out bench/results/ece_floor.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.metrics import ece  # noqa: E402
from tasks.training.calibrate import calibrate  # noqa: E402

TARGET = 0.02


def floor(workdir: Path, name: str, draws: int, seed: int) -> dict:
    z = np.load(workdir / name / "scores.npz")
    y, raw, fold = z["y"], z["oof_raw"], z["fold"]
    folds = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(int(fold.max()) + 1)]
    cal = calibrate(raw, y, folds, "auto", 10, None)
    p = cal.oof_calibrated
    rng = np.random.default_rng(seed)
    simulated = np.array([ece((rng.random(p.size) < p).astype(np.int64), p, 10, "width") for _ in range(draws)])
    return {"rows": int(y.size), "calibrator": cal.method, "ece": round(ece(y, p, 10, "width"), 4),
            "perfect_median": round(float(np.median(simulated)), 4),
            "perfect_p90": round(float(np.quantile(simulated, 0.9)), 4),
            "perfect_share_at_or_below_target": round(float(np.mean(simulated <= TARGET)), 3),
            "measured_percentile": round(float(np.mean(simulated <= ece(y, p, 10, "width"))), 3),
            "draws": draws}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="a bench_training.py --workdir")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ece_floor.json")
    args = parser.parse_args(argv)
    names = sorted(d.name for d in args.workdir.iterdir() if (d / "scores.npz").exists())
    if not names:
        print(f"{args.workdir}: no <set>/scores.npz; run bench_training.py --workdir {args.workdir} first",
              file=sys.stderr)
        return 2
    results = {name: floor(args.workdir, name, args.draws, args.seed) for name in names}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("| dataset | rows | calibrator | ECE | perfect model: median / 90th pct | perfect model ≤ 0.02 | "
          "ECE's percentile among perfect |")
    print("|---|---:|---|---:|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['rows']} | {r['calibrator']} | {r['ece']:.4f} | {r['perfect_median']:.4f} / "
              f"{r['perfect_p90']:.4f} | {r['perfect_share_at_or_below_target']:.0%} | "
              f"{r['measured_percentile']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
