"""One channel or two between a host's workers: what carrying the windows through the shared SQLite file costs.

Two server processes' recorders (serving.monitoring.recorder.Recorder) share one run/monitoring folder,
as the two workers of a host do, each fed by 4 client threads (8 in all) that record single-row scored
requests as /predict does (``Recorder.scored``: a queue put), for ``--seconds``. "before" is the code of
``--before`` (a checkout with the windows as per-worker JSON files plus the SQLite file of scored rows:
two channels), "after" this tree (the windows a table of the same SQLite file: one channel). Alternating
rounds (the order flips each round), each measuring, on both workers:

  batch    the recorder thread's work per 0.1 s batch (``_apply``: the counts and the scored rows' SQLite
           write), median and p99 over the batches
  share    the thread's write of this worker's windows for the others (every second and on each read's
           ask): median and p99 (files before, one SQLite transaction after)
  busy     the recorder thread's share of the wall clock (batches + shares): what it takes from the GIL
           that the request handlers need

and on worker 1, ``--reads`` reads of the last hour as ``GET /monitoring/window`` makes them (flush, ask the
other worker to share and wait for its acknowledgement, merge): median and max; and ``fresh=False`` (what
``/metrics`` reads): median.

The machine is shared: every figure is the median over the rounds of each round's median.

Usage: .venv/bin/python bench/bench_host_channels.py --before CHECKOUT [--rounds 3] [--seconds 4] [--reads 20]
                                                    [--out bench/results/host_channels.json]
(CHECKOUT: e.g. ``git archive a7da703 serving | tar -x -C /tmp/before``.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_PER_WORKER = 4
REQUEST_GAP_S = 0.002          # a client's think time between requests (~450 requests/s each)
NAMES = ("1-1", "2-1")         # worker names stand for <pid>-<start time>
FEATURES_NUMERIC, FEATURES_CATEGORICAL = 16, 4


def _metadata():
    from types import SimpleNamespace

    from serving.contract.metadata import InputSpec

    numeric = [f"n{i}" for i in range(FEATURES_NUMERIC)]
    categorical = [f"c{i}" for i in range(FEATURES_CATEGORICAL)]
    return SimpleNamespace(
        inputs=[InputSpec(name=n, type="numeric", dtype="float64") for n in numeric]
        + [InputSpec(name=c, type="categorical", dtype="string") for c in categorical],
        reference={"numeric": {n: {"edges": [0.1 * k for k in range(1, 10)]} for n in numeric},
                   "categorical": {c: {"categories": ["a", "b", "c", "d"]} for c in categorical},
                   "prediction": {"edges": [0.1 * k for k in range(1, 10)]}})


def _timed(fn, into: list[float]):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - started)
    return wrapper


def _recorder(root: Path, name: str):
    """A recorder of the code on sys.path, sharing ``root``, with its thread's work timed; and the name of the
    method that writes its windows for the others."""
    from serving.monitoring import host_windows
    from serving.monitoring.recorder import Recorder

    def live() -> set[str]:
        return set(NAMES)

    if hasattr(host_windows, "HostWindows"):
        rec = Recorder(host=host_windows.HostWindows(root, name, live))
        share = "share_windows"
    else:
        rec = Recorder(peers=host_windows.Peers(root, name, live))
        share = "publish"
    rec.register("1", _metadata())
    return rec, share


def _clients(rec, stop: threading.Event, worker: int) -> list[threading.Thread]:
    import numpy as np

    rng = np.random.default_rng(worker)

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            columns = {f"n{j}": rng.random(1) for j in range(FEATURES_NUMERIC)}
            category = np.asarray([("a", "b", "x")[i % 3]], dtype=object)     # x: an unseen category
            columns |= {f"c{j}": category for j in range(FEATURES_CATEGORICAL)}
            rec.scored("1", f"w{worker}-c{k}-{i}", columns, rng.random(1), 0.002, rng.random(1))
            i += 1
            time.sleep(REQUEST_GAP_S)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS_PER_WORKER)]
    for t in threads:
        t.start()
    return threads


def worker(code: str, root: str, index: int, seconds: float, reads: int, barrier, results) -> None:
    sys.path.insert(0, code)
    rec, share = _recorder(Path(root), NAMES[index])
    batches: list[float] = []
    shares: list[float] = []
    rec._apply = _timed(rec._apply, batches)            # the thread looks both up on the instance
    setattr(rec, share, _timed(getattr(rec, share), shares))
    barrier.wait(timeout=120)
    stop = threading.Event()
    threads = _clients(rec, stop, index)
    started = time.perf_counter()
    fresh, stale = [], []
    if index == 0:
        time.sleep(min(1.0, seconds / 4))               # some traffic first
        gap = max(0.0, (seconds - (time.perf_counter() - started)) / max(reads, 1))
        for _ in range(reads):
            t0 = time.perf_counter()
            answer = rec.window(time.time() - 3600)
            fresh.append(time.perf_counter() - t0)
            assert answer["workers"]["late"] == [], answer["workers"]
            t0 = time.perf_counter()
            rec.window(time.time() - 3600, fresh=False)
            stale.append(time.perf_counter() - t0)
            time.sleep(gap)
    remaining = seconds - (time.perf_counter() - started)
    if remaining > 0:
        time.sleep(remaining)
    elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join(timeout=10)
    barrier.wait(timeout=120)                           # neither closes while the other may still ask it
    rec.close()
    results.put({"worker": index, "batches": batches, "shares": shares, "elapsed": elapsed,
                 "busy": (sum(batches) + sum(shares)) / elapsed, "reads": fresh, "stale_reads": stale})


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_round(code: Path, seconds: float, reads: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="host-channels-") as tmp:
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(str(code), tmp, i, seconds, reads, barrier, results))
                 for i in range(2)]
        for p in procs:
            p.start()
        out = [results.get(timeout=seconds + 180) for _ in procs]
        for p in procs:
            p.join(timeout=30)
    batches = [b for r in out for b in r["batches"]]
    shares = [s for r in out for s in r["shares"]]
    (reader,) = [r for r in out if r["worker"] == 0]
    ms = 1e3
    return {"batch_p50_ms": _q(batches, 0.5) * ms, "batch_p99_ms": _q(batches, 0.99) * ms,
            "share_p50_ms": _q(shares, 0.5) * ms, "share_p99_ms": _q(shares, 0.99) * ms,
            "busy_pct": 100 * statistics.mean(r["busy"] for r in out),
            "read_p50_ms": _q(reader["reads"], 0.5) * ms, "read_max_ms": max(reader["reads"]) * ms,
            "stale_read_p50_ms": _q(reader["stale_reads"], 0.5) * ms, "batches": len(batches), "shares": len(shares)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "host_channels.json")
    args = parser.parse_args()
    codes = {"before": args.before.resolve(), "after": ROOT}
    rounds: dict[str, list[dict]] = {name: [] for name in codes}
    for r in range(args.rounds):
        order = list(codes) if r % 2 == 0 else list(reversed(codes))
        for name in order:
            rounds[name].append(one_round(codes[name], args.seconds, args.reads))
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in rounds[name][-1].items()),
                  flush=True)
    summary = {name: {key: round(statistics.median(x[key] for x in runs), 3) for key in runs[0]}
               for name, runs in rounds.items()}
    result = {"rounds": args.rounds, "seconds": args.seconds, "reads": args.reads, "clients": 2 * CLIENTS_PER_WORKER,
              "workers": 2, "features": FEATURES_NUMERIC + FEATURES_CATEGORICAL, "median_of_rounds": summary,
              "per_round": rounds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':22}{'before':>10}{'after':>10}")
    for key in summary["after"]:
        print(f"{key:22}{summary['before'][key]:>10.2f}{summary['after'][key]:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
