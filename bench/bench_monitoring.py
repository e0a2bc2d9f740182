"""Monitoring benchmark: what recording costs the server, how fast the checklist is computed from what
the server holds, how often PSI cries wolf, and Evidently's PSI on the same rows in the same run.

  1. overhead   our server with monitoring on and off, alternating rounds (8 clients and 1 client,
                single-row requests): requests/s and p50 — goal: at most 5 % fewer requests/s
  2. scale      1,000,000 scored rows of 20 numeric features recorded by serving.monitoring.recorder.Recorder,
                labelled through Recorder.feedback; then PSI for the 20 features and the predictions,
                ECE and ROC-AUC from what the recorder holds (window + serving.contract.drift) — goal: < 1 s
  3. false      two samples of one population (1,000 rows each; an integer and a continuous
     alarms     feature), 200 pairs: the share of pairs with PSI >= 0.1 — goal: < 1 %
  4. Evidently  its data drift report with the PSI test on the same 20 features (reference 100,000
                rows, current 1,000,000), in its own venv (it does not import with pandas 3)

Usage: .venv/bin/python bench/bench_monitoring.py [--home DIR] [--seconds 10] [--rounds 3]
                                                [--evidently-python PATH] [--out bench/results/monitoring.json]
Without --home it trains two demo versions first (bench_serving.prepare_home).
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
from types import SimpleNamespace

import numpy as np
from bench_serving import PY, ROOT, drive, prepare_home, wait_ready

from serving.contract.binning import bin_fractions, quantile_edges
from serving.contract.drift import feature_drift, label_metrics, prediction_drift
from serving.contract.metadata import InputSpec
from serving.monitoring.recorder import Recorder
from testkit.net import free_port

N_FEATURES = 20


# ---------------------------------------------------------------- 1. overhead

def overhead(home: Path, model_name: str, seconds: float, rounds: int) -> dict:
    models = home / "models" / model_name
    version = sorted((p.name for p in models.iterdir() if p.name.isdigit()), key=int)[-1]
    meta = json.loads((models / version / "metadata.json").read_text())
    body = json.dumps({"features": [meta["golden_examples"][0]["features"]]}).encode()
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            port = free_port()
            env = {**os.environ, "SERVING_MODEL_ROOT": str(home / "models"), "SERVING_MODEL_DIR": str(models),
                   "SERVING_MODEL_VERSION": version, "SERVING_MONITORING": "true" if mode == "on" else "false",
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
            proc = subprocess.Popen([PY, "-m", "serving", "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_ready(port, "/health", proc)
                drive(port, "/predict", body, 1, 200, 30)                        # warm-up
                eight = drive(port, "/predict", body, 8, 40_000, seconds)
                one = drive(port, "/predict", body, 1, 5_000, seconds)
                runs[mode].append({"eight_clients": eight, "one_client": one})
                print(f"[overhead] round {r + 1} monitoring {mode}: 8 clients {eight['rps']} req/s, "
                      f"1 client p50 {one['p50_ms']} ms", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    def med(mode: str, scenario: str, key: str) -> float:
        return statistics.median(run[scenario][key] for run in runs[mode])

    on_rps, off_rps = med("on", "eight_clients", "rps"), med("off", "eight_clients", "rps")
    loss = 1 - on_rps / off_rps
    return {"rounds": rounds, "seconds_per_scenario": seconds, "runs": runs,
            "eight_clients_rps": {"on": on_rps, "off": off_rps}, "throughput_loss": round(loss, 4),
            "one_client_p50_ms": {"on": med("on", "one_client", "p50_ms"), "off": med("off", "one_client", "p50_ms")},
            "goal": "throughput loss <= 5 %", "goal_met": loss <= 0.05}


# ---------------------------------------------------------------- 2. scale

def population(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """20 numeric features: half continuous (normal, lognormal), half integers (Poisson, uniform)."""
    cols = []
    for j in range(N_FEATURES):
        kind = j % 4
        if kind == 0:
            cols.append(rng.normal(shift, 1.0, n))
        elif kind == 1:
            cols.append(rng.lognormal(shift * 0.2, 0.8, n))
        elif kind == 2:
            cols.append(rng.poisson(3 + shift, n).astype(np.float64))
        else:
            cols.append(rng.integers(0, 60, n).astype(np.float64))
    return np.column_stack(cols)


def reference(x: np.ndarray, p: np.ndarray) -> SimpleNamespace:
    pred_edges = [round(0.1 * i, 1) for i in range(1, 10)]
    numeric = {}
    for j in range(x.shape[1]):
        edges = quantile_edges(x[:, j], 10)
        numeric[f"f{j}"] = {"edges": edges, "fractions": bin_fractions(x[:, j], edges), "null_fraction": 0.0}
    return SimpleNamespace(
        inputs=[InputSpec(name=f"f{j}", type="numeric", dtype="float64") for j in range(x.shape[1])],
        reference={"numeric": numeric, "categorical": {},
                   "prediction": {"edges": pred_edges, "fractions": bin_fractions(p, pred_edges),
                                  "mean": float(p.mean()), "std": float(p.std()),
                                  "extreme_fraction": float(np.mean((p < 0.05) | (p > 0.95)))}})


def scale(rows: int, batch: int, out_dir: Path) -> dict:
    rng = np.random.default_rng(0)
    ref_x = population(rng, 100_000)
    ref_p = 1 / (1 + np.exp(-ref_x[:, 0]))
    meta = reference(ref_x, ref_p)
    cur_x = population(rng, rows, shift=0.1)
    cur_p = 1 / (1 + np.exp(-cur_x[:, 0]))
    labels = (rng.random(rows) < cur_p).astype(int)
    rec = Recorder(window_s=60, keep_windows=1440, feedback_max_rows=rows)
    rec.register("1", meta)
    t0 = time.perf_counter()
    for i in range(0, rows, batch):
        cols = {f"f{j}": cur_x[i:i + batch, j] for j in range(N_FEATURES)}
        rec.scored("1", f"r{i}", cols, cur_p[i:i + batch])
        rec.request("1", 200, 0.002)
    rec.flush()
    record_s = time.perf_counter() - t0
    items = [{"request_id": f"r{i}", "row": k, "label": int(labels[i + k])}
             for i in range(0, rows, batch) for k in range(min(batch, rows - i))]
    t0 = time.perf_counter()
    answer = rec.feedback(items)
    feedback_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    window = rec.window(since=0)
    w = window["versions"]["1"]
    psi = feature_drift(w, meta.reference, 200)
    pred = prediction_drift(w, meta.reference, 200)
    lab = label_metrics(w["labels"])
    compute_s = time.perf_counter() - t0
    rec.close()
    np.save(out_dir / "reference.npy", ref_x)
    np.save(out_dir / "current.npy", cur_x)
    return {"rows": rows, "features": N_FEATURES, "batch_rows": batch,
            "record_seconds": round(record_s, 3), "record_rows_per_second": round(rows / record_s),
            "feedback_seconds": round(feedback_s, 3), "labels_accepted": answer["accepted"],
            "checklist_seconds": round(compute_s, 4),
            "psi": {k: v["psi"] for k, v in psi.items()}, "prediction_psi": pred.get("psi"),
            "ece": lab["ece"], "roc_auc": lab["roc_auc"], "goal": "checklist from what the server holds < 1 s",
            "goal_met": compute_s < 1.0}


# ---------------------------------------------------------------- 3. false alarms

def false_alarms(pairs: int, n: int) -> dict:
    rng = np.random.default_rng(1)
    out = {}
    for name, draw in (("integer (Poisson 3)", lambda k: rng.poisson(3, k).astype(np.float64)),
                       ("continuous (normal)", lambda k: rng.normal(0, 1, k))):
        values = []
        for _ in range(pairs):
            a, b = draw(n), draw(n)
            edges = quantile_edges(a, 10)
            ref = {"numeric": {"x": {"edges": edges, "fractions": bin_fractions(a, edges), "null_fraction": 0.0}}}
            counts = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1).tolist() + [0]
            window = {"features": {"x": {"kind": "numeric", "edges": edges, "counts": counts}}}
            values.append(feature_drift(window, ref, 200)["x"]["psi"])
        v = np.asarray(values)
        out[name] = {"pairs": pairs, "rows_each": n, "share_psi_ge_0.1": float(np.mean(v >= 0.1)),
                     "median_psi": round(float(np.median(v)), 5), "max_psi": round(float(v.max()), 5)}
    worst = max(x["share_psi_ge_0.1"] for x in out.values())
    return {**out, "goal": "share of pairs with PSI >= 0.1 under 1 %", "goal_met": worst < 0.01}


# ---------------------------------------------------------------- 4. Evidently

EVIDENTLY_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
ref = pd.DataFrame(np.load(sys.argv[1]), columns=[f"f{j}" for j in range(20)])
cur = pd.DataFrame(np.load(sys.argv[2]), columns=[f"f{j}" for j in range(20)])
import evidently
t0 = time.perf_counter()
try:                                   # evidently >= 0.7
    from evidently import Report
    from evidently.presets import DataDriftPreset
    report = Report([DataDriftPreset(method="psi")])
    result = report.run(cur, ref)
    data = result.dict()
except ImportError:                    # the legacy API
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    report = Report(metrics=[DataDriftPreset(stattest="psi")])
    report.run(reference_data=ref, current_data=cur)
    data = report.as_dict()
seconds = time.perf_counter() - t0
psi = {}
for m in data.get("metrics", []):
    name = str(m.get("metric_name", ""))
    if name.startswith("ValueDrift(column="):
        psi[name.split("column=")[1].split(",")[0]] = round(float(m["value"]), 6)
print(json.dumps({"version": evidently.__version__, "pandas": pd.__version__, "seconds": round(seconds, 3),
                  "reference_rows": len(ref), "current_rows": len(cur), "psi": psi}))
"""


def evidently(python: str | None, out_dir: Path) -> dict:
    if not python:
        return {"skipped": "no --evidently-python given "
                           "(make a venv: python3.11 -m venv V && V/bin/pip install evidently)"}
    script = out_dir / "evidently_psi.py"
    script.write_text(EVIDENTLY_SCRIPT)
    proc = subprocess.run([python, str(script), str(out_dir / "reference.npy"), str(out_dir / "current.npy")],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"failed": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a pipeline home with a released version")
    parser.add_argument("--model-name", default="credit-risk")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound per load scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--evidently-python", default=None, help="python of a venv with evidently installed")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "monitoring.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    results: dict = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print("[false alarms] 200 pairs x 2 features", flush=True)
    results["false_alarms"] = false_alarms(200, 1000)
    print(f"[scale] {args.rows} rows x {N_FEATURES} features", flush=True)
    results["scale"] = scale(args.rows, 1000, tmp)
    print("[evidently]", flush=True)
    results["evidently"] = evidently(args.evidently_python, tmp)
    if "seconds" in results["evidently"]:
        results["evidently"]["ours_checklist_seconds"] = results["scale"]["checklist_seconds"]
        results["evidently"]["ours_record_plus_checklist_seconds"] = round(
            results["scale"]["record_seconds"] + results["scale"]["checklist_seconds"], 3)
    if not args.skip_overhead:
        home = args.home
        if home is None:
            home = tmp / "home"
            print(f"training demo versions in {home} ...", flush=True)
            prepare_home(home)
        results["overhead"] = overhead(home.resolve(), args.model_name, args.seconds, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "overhead"} | {
        "overhead": {k: v for k, v in results.get("overhead", {}).items() if k != "runs"}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
