"""The server under a supervisor: gunicorn's master process with N uvicorn workers.

The master owns the listening socket and replaces a worker that dies (killed, out of memory)
at once; while the new worker imports TensorFlow and loads the models, connections go to the
other workers or wait in the socket's backlog instead of being refused. N is ``--workers`` /
``SERVING_WORKERS`` (default ``auto``, one per CPU, with a state file; 1 without); each worker's
TensorFlow gets CPUs // N threads.

The workers stay in step through the host's desired state, ``SERVING_STATE_FILE``: the worker that
receives an admin change writes the next generation of it, the others follow within a second, and
a new worker serves it from the start (serving/workers/sync.py, serving/workers/state.py). Their Prometheus
counters are kept in prometheus_client's multiprocess files (run/metrics/, emptied here at start; the
master drops a dead worker's live gauges) and their monitoring in one SQLite file, run/monitoring/scored.sqlite
(serving/monitoring/host_store.py), so any worker answers for the host. A dead master is systemd's to restart:
deployments/systemd/ml-pipeline-api.service.
"""

from __future__ import annotations

import os
from pathlib import Path

from gunicorn.app.base import BaseApplication
from gunicorn.util import import_app
from uvicorn_worker import UvicornWorker

WORKER_CLASS = "serving.workers.supervise.ServingWorker"
# gunicorn kills a worker silent this long; start-up (TensorFlow import, load, warm-up) stays well inside.
WORKER_TIMEOUT_S = 120
GRACEFUL_TIMEOUT_S = 30


class ServingWorker(UvicornWorker):
    """uvicorn with the fast loop and parser, and no access log (the server counts requests itself)."""

    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}


def worker_exited(server, worker) -> None:
    """gunicorn's ``child_exit`` hook (in the master): a dead worker's live gauges leave the merged metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid)


def metrics_folder(state_file: Path) -> Path:
    """prometheus_client's multiprocess folder beside the state file, emptied: counters start at zero with the
    master (a Prometheus counter reset), never mixed with a previous master's."""
    folder = state_file.parent / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    return folder


class Supervisor(BaseApplication):
    def __init__(self, app_uri: str, host: str, port: int, log_level: str, workers: int = 1) -> None:
        self.app_uri = app_uri   # "module:attribute", imported in each worker (serving/__main__.py names the app)
        self.options = {"bind": f"{host}:{port}", "workers": workers, "worker_class": WORKER_CLASS,
                        "child_exit": worker_exited,
                        "timeout": WORKER_TIMEOUT_S, "graceful_timeout": GRACEFUL_TIMEOUT_S, "keepalive": 5,
                        "loglevel": log_level, "accesslog": None, "errorlog": "-",
                        "proc_name": "ml-pipeline-api", "control_socket_disable": True}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Called in the worker after the fork: TensorFlow is imported there, never in the master.
        return import_app(self.app_uri)


def run(app_uri: str, host: str, port: int, log_level: str = "info", workers: int = 1) -> None:
    """Run the master (this process) and ``workers`` server processes of ``app_uri`` until a signal ends them."""
    # The workers read these at start: how many they are (their share of the CPUs), and whose children.
    os.environ["SERVING_WORKERS"] = str(workers)
    os.environ["SERVING_MASTER_PID"] = str(os.getpid())
    state_file = os.environ.get("SERVING_STATE_FILE")
    if state_file:
        # Read by prometheus_client when the workers import it (after the fork; the master never does first).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_folder(Path(state_file).resolve()))
    Supervisor(app_uri, host, port, log_level, workers).run()
