"""A real nginx for tests: the balancer's standalone configuration, run in the foreground, stopped after."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.deploy.balancer import NginxBalancer


@contextmanager
def running_nginx(balancer: NginxBalancer, timeout_s: float = 30) -> Iterator[subprocess.Popen]:
    """Write the balancer's configuration, start nginx on it (not a daemon; pid, logs and temp files under its
    config dir), wait until it answers the generation written; stop it (and its workers) afterwards."""
    if shutil.which(balancer.command()[0]) is None:
        raise RuntimeError(f"{balancer.spec.nginx} is not installed; `make test` installs it (system-deps)")
    state = balancer.write()
    log = open(balancer.dir / "logs" / "nginx.out", "ab")
    proc = subprocess.Popen(balancer.command("-g", "daemon off;"), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while balancer.served_generation(timeout=1) != state.generation:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}: "
                                   + (balancer.dir / "logs" / "nginx.out").read_text()[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not answer generation {state.generation} at {balancer.url} "
                                   f"within {timeout_s}s")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()          # SIGTERM: a fast shutdown of the master and its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
