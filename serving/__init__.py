"""The model server: what ships to a target host in the release bundle and serves a model over HTTP.

It imports nothing from ``flows/``, ``tasks/``, Prefect or MLflow. Its rooms, each a package:

    contract/   what training and serving must agree on, and the only part ``tasks/`` imports: the
                data contract (schema, input rules), metadata.json, calibrators, the drift maths, loading
                and scoring an exported version, digests, the shared file helpers, the errors
    api/        the HTTP layer: the FastAPI app built from routers, authorisation as a dependency,
                request accounting in one place, typed bodies that write the OpenAPI document
    scoring/    the data plane: the loaded versions and their routing, the thread that batches calls
    monitoring/ what the server records (counts per window, labels awaiting feedback), the drift and
                dashboard summary, Prometheus
    workers/    several server processes on one host: the supervisor, the host's desired state, worker
                records and host events, and how a worker follows the state
    host/       the host agent (``python -m serving.host``): standard library only, runs the release
                operations on a target host (unpack, environment, start, stop, status, ...)

``settings.py`` holds the server's settings (SERVING_* variables), read once at start-up.
"""
