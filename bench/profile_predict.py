"""Where a /predict request spends its time inside the server: the ASGI app called in-process.

No sockets and no HTTP parser: the app is called with an ASGI scope and the body, as uvicorn would,
so what is timed is routing, validation, the model call (through the scorer thread), the
monitoring hand-off and the response encoding.

Usage: .venv/bin/python bench/profile_predict.py --version-dir HOME/models/NAME/VERSION [--rows 1000]
       [--requests 500] [--profile]   (cProfile's top functions by cumulative time)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
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
        times = []
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        for _ in range(args.requests):
            t0 = time.perf_counter()
            await call(app, body)
            times.append(time.perf_counter() - t0)
        if profiler:
            profiler.disable()
    times.sort()
    print(f"{args.rows} row(s): median {statistics.median(times) * 1e3:.3f} ms, "
          f"p90 {times[int(len(times) * 0.9)] * 1e3:.3f} ms, p99 {times[int(len(times) * 0.99)] * 1e3:.3f} ms "
          f"over {len(times)} requests; response {len(answer)} bytes")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
