"""Where a /predict request spends its time inside the server: the ASGI app called in-process.

No sockets and no HTTP parser: the app is called with an ASGI scope and the body, as uvicorn would,
so what is timed is routing, validation, the model call (through the scorer thread), the
monitoring hand-off and the response encoding.

Besides wall time per request, it reports the event loop's own CPU per request (``time.thread_time``:
less sensitive to a busy machine than wall time, and the part that is neither the model nor waiting)
and the cyclic garbage collector's pauses during the timed requests (a full collection in the middle
of a request is what one client sees as its p99). ``--stages`` times the steps of the 1,000-row path
alone: orjson parse, ``read_json_rows``, the model call, the answer's encoding.

Usage: .venv/bin/python bench/profile_predict.py --version-dir HOME/models/NAME/VERSION [--rows 1000]
       [--requests 500] [--profile]   (cProfile's top functions by cumulative time) [--stages]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import statistics
import time
from pathlib import Path


async def call(app, body: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    sent = False
    out: list[bytes] = []
    status = 0

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(out)


class GCPauses:
    """The collector's pauses while installed: how many per generation, their total and the longest."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def report(self, requests: int) -> str:
        by_gen = [sum(1 for g, _ in self.pauses if g == gen) for gen in range(3)]
        total = sum(p for _, p in self.pauses)
        longest = max((p for _, p in self.pauses), default=0.0)
        return (f"gc: {by_gen[0]}/{by_gen[1]}/{by_gen[2]} collections (gen 0/1/2) in {requests} requests, "
                f"{total * 1e3:.1f} ms in all, longest {longest * 1e3:.2f} ms")


def time_stages(app, body: bytes, repeat: int = 200) -> None:
    """Each step of the /predict path alone, median of ``repeat`` runs."""
    import orjson

    from serving.api.encoding import predictions_json
    from serving.contract.inputs import read_json_rows

    server = app.state.server
    model = server.versions.routing.models[server.versions.routing.default]
    rows = orjson.loads(body)["features"]
    columns, _ = read_json_rows(model.specs, rows, server.settings.policy)
    raw, prob = model.score_columns(columns)
    steps = {"orjson.loads": lambda: orjson.loads(body),
             "read_json_rows": lambda: read_json_rows(model.specs, rows, server.settings.policy),
             "model.score_columns": lambda: model.score_columns(columns),
             "predictions_json": lambda: predictions_json("r", "1", prob, raw)}
    for name, step in steps.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(f"  {name:<22} median {statistics.median(times) * 1e3:.3f} ms, min {min(times) * 1e3:.3f} ms")


async def run(args) -> None:
    version_dir = args.version_dir.resolve()
    os.environ.update({"SERVING_MODEL_ROOT": str(version_dir.parent.parent), "SERVING_MODEL_DIR":
                       str(version_dir.parent), "SERVING_MODEL_VERSION": version_dir.name,
                       "TF_CPP_MIN_LOG_LEVEL": "3"})
    from serving.api.app import create_app

    app = create_app()
    rows = [g["features"] for g in json.loads((version_dir / "metadata.json").read_text())["golden_examples"]]
    body = json.dumps({"features": [rows[i % len(rows)] for i in range(args.rows)]}).encode()
    async with app.router.lifespan_context(app):
        for _ in range(50):
            status, answer = await call(app, body)
        assert status == 200, answer[:500]
        if args.stages:
            time_stages(app, body)
        times = []
        profiler = cProfile.Profile() if args.profile else None
        pauses = GCPauses()
        gc.callbacks.append(pauses)
        if profiler:
            profiler.enable()
        cpu0 = time.thread_time()
        for _ in range(args.requests):
            t0 = time.perf_counter()
            await call(app, body)
            times.append(time.perf_counter() - t0)
        cpu = time.thread_time() - cpu0
        if profiler:
            profiler.disable()
        gc.callbacks.remove(pauses)
    times.sort()
    print(f"{args.rows} row(s): median {statistics.median(times) * 1e3:.3f} ms, "
          f"p90 {times[int(len(times) * 0.9)] * 1e3:.3f} ms, p99 {times[int(len(times) * 0.99)] * 1e3:.3f} ms "
          f"over {len(times)} requests; response {len(answer)} bytes; event loop CPU "
          f"{cpu / len(times) * 1e3:.3f} ms per request; {pauses.report(len(times))}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--stages", action="store_true", help="time each step of the path alone first")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
