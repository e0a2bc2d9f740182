"""``python -m serving``: start the model server, supervised (gunicorn's master restarts a dead worker;
serving/workers/supervise.py), or with ``--supervisor none`` as one plain process (``uvicorn serving.api.app:app``)."""

from __future__ import annotations

import argparse
import os

APP = "serving.api.app:app"   # the ASGI app every server process runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve exported TabularANN model versions over HTTP.",
        epilog="Also configured by SERVING_* environment variables (see serving/settings.py); "
               "the admin token is read from SERVING_ADMIN_TOKEN only, never from the command line.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-root", help="the only directory tree models may be loaded from (SERVING_MODEL_ROOT)")
    parser.add_argument("--model-dir", help="load DIR/VERSION at start (SERVING_MODEL_DIR)")
    parser.add_argument("--version", help="the version to load at start (SERVING_MODEL_VERSION)")
    parser.add_argument("--workers",
                        help="server processes under the master (SERVING_WORKERS; auto: one per CPU, the default with "
                             "SERVING_STATE_FILE, through which they stay in step; without it, 1)")
    parser.add_argument("--intra-op-threads", type=int,
                        help="TensorFlow intra-op threads per server process (default: CPUs // workers)")
    parser.add_argument("--inter-op-threads", type=int, help="TensorFlow inter-op threads (default: 1)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--supervisor", choices=["gunicorn", "none"], default="gunicorn",
                        help="gunicorn (default): a master process replaces the server process if it dies, and the "
                             "new one serves what the old one did (SERVING_STATE_FILE); none: one plain process")
    args = parser.parse_args(argv)
    for flag, env in (("model_root", "SERVING_MODEL_ROOT"), ("model_dir", "SERVING_MODEL_DIR"),
                      ("version", "SERVING_MODEL_VERSION"), ("intra_op_threads", "SERVING_INTRA_OP_THREADS"),
                      ("inter_op_threads", "SERVING_INTER_OP_THREADS")):
        value = getattr(args, flag)
        if value is not None:
            # Paths on a command line are the shell's: relative to where it runs, not to the model root.
            os.environ[env] = os.path.abspath(value) if flag in ("model_root", "model_dir") else str(value)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.supervisor == "gunicorn":
        from serving.contract.processes import available_cpus
        from serving.workers.supervise import run

        shared = bool(os.environ.get("SERVING_STATE_FILE"))
        wanted = args.workers or os.environ.get("SERVING_WORKERS") or ("auto" if shared else "1")
        try:
            workers = available_cpus() if wanted == "auto" else int(wanted)
        except ValueError:
            parser.error(f"--workers / SERVING_WORKERS must be a whole number or auto, got {wanted!r}")
        if workers < 1:
            parser.error(f"--workers must be at least 1, got {workers}")
        if workers > 1 and not shared:
            parser.error(f"{workers} workers need SERVING_STATE_FILE (the desired state they follow); "
                         "set it, or use --workers 1")
        run(APP, args.host, args.port, args.log_level, workers)
        return 0
    os.environ["SERVING_WORKERS"] = "1"
    import uvicorn

    uvicorn.run(APP, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
