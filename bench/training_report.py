"""The report of bench/bench_training.py: the machine it ran on, the CPU other processes took meanwhile, and
its results as markdown tables."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from testkit.procs import machine_busy_seconds


def cpu_snapshot() -> tuple[float, float, float]:
    """(CPU seconds busy on the whole machine, CPU seconds of this process, wall clock)."""
    t = os.times()
    return machine_busy_seconds(), t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def other_load(start: tuple[float, float, float]) -> dict:
    """CPU used by other processes since ``start``: non-zero means the timings were disturbed."""
    end = cpu_snapshot()
    wall = end[2] - start[2]
    own = end[1] - start[1]
    others = max(0.0, (end[0] - start[0]) - own)
    return {"wall_s": round(wall, 1), "own_cpu_s": round(own, 1), "other_processes_cpu_s": round(others, 1),
            "other_processes_cores": round(others / wall, 2) if wall else 0.0}


def environment() -> dict:
    import keras
    import sklearn
    import tensorflow as tf

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu": cpu, "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "scikit_learn": sklearn.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def _f(v, fmt=".4f"):
    return "—" if v is None else format(v, fmt)


def markdown(results: list[dict]) -> str:
    """The quality table, the stage-time table, the network search's table and the failures, as markdown."""
    ok = [r for r in results if "error" not in r]
    return "\n".join(quality_table(ok) + [""] + timing_table(ok) + search_table(ok) + failures(results))


def quality_table(ok: list[dict]) -> list[str]:
    lines = [
        ("| dataset | rows | pos. rate | ours AUC raw / cal | HGB AUC raw / cal | Δ AUC cal (95% CI) "
         "| ours ECE raw → cal (calibrator) | HGB ECE cal | ours Brier cal | HGB Brier cal | AUC goal | ECE goal |"),
        "|---|---:|---:|---|---|---|---|---:|---:|---:|:-:|:-:|",
    ]
    for r in ok:
        o, b, d = r["ours"], r["baseline"], r["auc_diff_calibrated"]
        lines.append(
            f"| {r['dataset']} | {r['rows']} | {r['positive_rate']:.3f} "
            f"| {o['raw']['roc_auc']:.4f} / {o['calibrated']['roc_auc']:.4f} "
            f"| {b['raw']['roc_auc']:.4f} / {b['calibrated']['roc_auc']:.4f} "
            f"| {d['point']:+.4f} ({d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}) "
            f"| {o['raw']['ece']:.4f} → {o['calibrated']['ece']:.4f} ({r['calibration']['chosen']}) "
            f"| {b['calibrated']['ece']:.4f} "
            f"| {o['calibrated']['brier']:.4f} | {b['calibrated']['brier']:.4f} "
            f"| {'met' if r['goal']['auc_met'] else 'MISSED'} | {'met' if r['goal']['ece_met'] else 'MISSED'} |")
    return lines


def timing_table(ok: list[dict]) -> list[str]:
    lines = [
        ("| dataset | infer contract s | validate/load s | CV s | fuse ensemble s | calibrate s | export s "
         "| HGB CV s | train rows/s | epochs run per fold | one-row p50 / p99 ms | other processes' cores |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in ok:
        s = r["stages_seconds"]
        epochs = ",".join(str(f["epochs_run"]) for f in r["ours_folds"])
        lat = r.get("one_row_latency")
        lat_s = f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}" if lat else "—"
        lines.append(
            f"| {r['dataset']} | {_f(s['infer_contract'], '.2f')} | {_f(s['validate_load'], '.2f')} "
            f"| {_f(s['cross_validation'], '.1f')} | {_f(s['ensemble'], '.1f')} | {_f(s['calibrate'], '.3f')} "
            f"| {_f(s['export'], '.1f')} | {_f(s['baseline_cross_validation'], '.1f')} "
            f"| {r['rows_per_second']:.0f} | {epochs} | {lat_s} | {r['machine_load']['other_processes_cores']:.2f} |")
    return lines


def search_table(ok: list[dict]) -> list[str]:
    """Inner-validation log-loss of each candidate of the network search, where one ran."""
    searched = [r for r in ok if r.get("search")]
    if not searched:
        return []
    candidates = searched[0]["search"]["candidates"]
    names = ["configured" if not c["changes"] else ", ".join(f"{k}={v}" for k, v in c["changes"].items())
             for c in candidates]
    lines = ["", "Network search, inner-validation log-loss per candidate (**chosen**; – not run: budget):", "",
             "| dataset | " + " | ".join(names) + " | search s |", "|---|" + "---:|" * (len(names) + 1)]
    for r in searched:
        cells = [("–" if c["val_loss"] is None else
                  f"**{c['val_loss']:.4f}**" if c["status"] == "chosen" else f"{c['val_loss']:.4f}")
                 for c in r["search"]["candidates"]]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + f" | {r['search']['seconds']:.0f} |")
    return lines


def failures(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"\n**{r['dataset']} failed:** {r['error']}")
        elif not r["export"]["ok"]:
            lines.append(f"\n**{r['dataset']}: export failed:** {r['export']['error']}")
    return lines
