"""The train stage: cross-validation folds fitted one after another, or as parallel Prefect tasks on Dask.

``training.parallel.runner: dask`` runs each fold (of each network the search tries, one network after
another: ``tasks/training/search.py``) as a ``fit-fold`` task of a ``train-folds`` subflow
whose task runner is prefect-dask's ``DaskTaskRunner``: on a local cluster sized to this machine
(one process per fold up to the CPUs), or on the scheduler at ``training.parallel.address``. Each fold
gets TensorFlow threads so that the folds of one host do not fight over its cores: the host's CPUs
divided by the worker threads the scheduler knows on that host. A fold's fit is plain data
(``tasks.training.train.FoldFit``: weights, preprocessing constants, out-of-fold scores); the release's
process rebuilds and fuses them. TensorFlow's op determinism makes the weights independent of the
process and of the thread count: the same seed gives the same model serially, locally in parallel
or on a cluster.
"""

from __future__ import annotations

import os
import socket

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed

from flows.output import progress_to_run_log, quiet_tensorflow_import
from flows.stages import train_task
from serving.contract.processes import available_cpus
from serving.contract.schema import FeatureList, Schema
from tasks.constants import MODEL_TYPE
from tasks.settings import Settings
from tasks.training.data import Dataset
from tasks.training.search import FoldsDone, SearchOutcome, run_search
from tasks.training.train import FoldFit, TrainResult, fit_fold, train


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def fold_threads() -> tuple[int, int]:
    """TensorFlow threads for a fold on this Dask worker: the host's CPUs shared by every worker thread
    the scheduler knows on this host (at least 1)."""
    from distributed import get_worker

    worker = get_worker()
    slots = worker.state.nthreads
    try:
        workers = worker.client.scheduler_info(n_workers=-1)["workers"]
        slots = sum(w["nthreads"] for address, w in workers.items() if _host_of(address) == _host_of(worker.address))
    except Exception:   # an older scheduler without the listing: this worker's own threads
        pass
    return max(1, available_cpus() // max(1, slots)), 1


@task(name="fit-fold", cache_policy=NO_CACHE, task_run_name="fit-fold-{fold}")
def fit_fold_task(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings, fold: int,
                  rows: np.ndarray, held_out: np.ndarray) -> FoldFit:
    quiet_tensorflow_import(os.environ)    # a worker process: TF_CPP_MIN_LOG_LEVEL comes from the release's
    threads = fold_threads()
    fit = fit_fold(ds, schema, features, settings, fold, rows, held_out, threads)
    get_run_logger().info("fold %d on %s (pid %d, %d TensorFlow threads): best epoch %d of %d, %.1fs", fold,
                          socket.gethostname(), os.getpid(), threads[0], fit.best_epoch, fit.epochs_run, fit.seconds)
    return fit


@flow(name="train-folds", validate_parameters=False)
def train_folds_flow(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings,
                     folds: list[tuple[np.ndarray, np.ndarray]]) -> SearchOutcome:
    """The folds of the configured network, and of each search candidate in turn, as parallel tasks.

    The dataset goes to the workers once (scattered to every worker), not pickled into each of the
    (candidates x folds) task submissions."""
    data = FlowRunContext.get().task_runner.client.scatter(ds, broadcast=True)

    def run_round(candidate: Settings, folds: list[tuple[np.ndarray, np.ndarray]],
                  fold_done: FoldsDone) -> list[FoldFit]:
        futures = [fit_fold_task.submit(data, schema, features, candidate, k, rows, held_out)
                   for k, (rows, held_out) in enumerate(folds)]
        fits = []
        for future in as_completed(futures):    # reported here, in the release's process, as each arrives
            fits.append(future.result())
            fold_done(fits[-1])
        return fits

    return run_search(settings, folds, run_round)


def task_runner(settings: Settings):
    """prefect-dask's runner: the configured scheduler, or a local cluster of one process per fold up to the CPUs."""
    from prefect_dask import DaskTaskRunner

    parallel = settings.training.parallel
    if parallel.address:
        return DaskTaskRunner(address=parallel.address)
    workers = parallel.workers or max(1, min(available_cpus(), settings.training.cv_folds))
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def train_stage(ds: Dataset, schema: Schema, features: FeatureList, settings: Settings) -> TrainResult:
    """Train as ``training.parallel`` says, each fold reported to the run log as it is fitted; called from a
    flow."""
    with progress_to_run_log():
        if settings.training.parallel.runner == "serial":
            return train_task(ds, schema, features, settings)
        runner = train_folds_flow.with_options(task_runner=task_runner(settings))
        result = train(ds, schema, features, settings,
                       run_folds=lambda settings, folds: runner(ds, schema, features, settings, folds))
    get_run_logger().info("trained %s: %d folds in parallel on Dask in %.1fs, an ensemble of %d fold models",
                          MODEL_TYPE, len(result.folds), result.timings["cv_seconds"], result.ensemble_members)
    return result
