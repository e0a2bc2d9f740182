"""The server under a supervisor: gunicorn's master process with one uvicorn worker.

The master owns the listening socket and replaces a worker that dies (killed, out of memory)
at once; while the new worker imports TensorFlow and loads the models, connections wait in the
socket's backlog instead of being refused. The new worker serves what the old one served: the
versions, default, split and shadow in ``SERVING_STATE_FILE`` (serving/app.py rewrites it after
every admin change). A dead master is systemd's to restart: deployments/systemd/ml-pipeline-api.service.

One worker: admin changes reach the process that received them, so several workers would
disagree about what they serve.
"""

from __future__ import annotations

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

WORKER_CLASS = "serving.supervise.ServingWorker"
# gunicorn kills a worker silent this long; start-up (TensorFlow import, load, warm-up) stays well inside.
WORKER_TIMEOUT_S = 120
GRACEFUL_TIMEOUT_S = 30


class ServingWorker(UvicornWorker):
    """uvicorn with the fast loop and parser, and no access log (the server counts requests itself)."""

    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}


class Supervisor(BaseApplication):
    def __init__(self, host: str, port: int, log_level: str) -> None:
        self.options = {"bind": f"{host}:{port}", "workers": 1, "worker_class": WORKER_CLASS,
                        "timeout": WORKER_TIMEOUT_S, "graceful_timeout": GRACEFUL_TIMEOUT_S, "keepalive": 5,
                        "loglevel": log_level, "accesslog": None, "errorlog": "-",
                        "proc_name": "ml-pipeline-api", "control_socket_disable": True}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Called in the worker after the fork: TensorFlow is imported there, never in the master.
        from serving.app import app

        return app


def run(host: str, port: int, log_level: str = "info") -> None:
    Supervisor(host, port, log_level).run()
