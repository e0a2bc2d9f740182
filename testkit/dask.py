"""A real Dask cluster on 127.0.0.1 for tests: ``dask scheduler`` and N ``dask worker`` processes.

The workers import the pipeline's code from the repository root (``PYTHONPATH``), as a team's
workers would from an installed checkout. ``start_dask_cluster`` returns once every worker has
registered with the scheduler (the scheduler is asked, nothing sleeps).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from testkit.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120


@contextmanager
def dask_cluster(workdir: Path, workers: int = 2, threads_per_worker: int = 1):
    """Yield the scheduler's address (``tcp://127.0.0.1:PORT``); everything is stopped afterwards."""
    from distributed import Client

    bin_dir = Path(sys.executable).parent
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        log = workdir / "scheduler.log"
        logs.append(log)
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT))
        wait_for_port(port, procs[0], log)
        address = f"tcp://127.0.0.1:{port}"
        for i in range(workers):
            log = workdir / f"worker-{i}.log"
            logs.append(log)
            procs.append(subprocess.Popen(
                [str(bin_dir / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads",
                 str(threads_per_worker), "--nworkers", "1", "--no-dashboard", "--name", f"worker-{i}"],
                stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT))
        with Client(address, timeout=READY_TIMEOUT_S) as client:
            try:
                client.wait_for_workers(workers, timeout=READY_TIMEOUT_S)
            except TimeoutError:
                tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
                raise RuntimeError(f"{workers} Dask workers did not register in {READY_TIMEOUT_S} s\n{tails}") from None
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
