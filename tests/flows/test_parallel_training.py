"""The folds as parallel Prefect tasks on Dask: a real ``dask scheduler`` with two ``dask worker``
processes on 127.0.0.1, and a local cluster; the same seed gives the same model as the serial run."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from prefect import flow

from tasks.contract_files import load_feature_list, load_schema
from tests.conftest import FAST_CONFIG, ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def contract():
    return load_schema(ROOT / "configs" / "schema.yaml"), load_feature_list(ROOT / "configs" / "feature_list.csv")


@pytest.fixture(scope="module")
def data(tmp_path_factory, demo_frame, contract):
    from tasks.training.data import load_dataset

    path = tmp_path_factory.mktemp("parallel") / "demo.csv"
    demo_frame.to_csv(path, index=False)
    return load_dataset(path, contract[0])


# A search with one candidate and no time limit: the same candidates run wherever the folds run.
SEARCH = {"training.search": {"enabled": True, "budget_s": None,
                              "candidates": [{"hidden_units": [8], "dropout": 0.0}]}}


def _settings(tmp_path, search: bool = False, **parallel):
    from tasks.settings import load_settings

    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "pipeline.yaml"
    config.write_text(FAST_CONFIG)
    return load_settings(config, env={"PIPELINE_HOME": str(tmp_path / "home")},
                         overrides={**{f"training.parallel.{k}": v for k, v in parallel.items()},
                                    **(SEARCH if search else {})})


@flow(name="train-in-a-flow", validate_parameters=False)
def _train_in_a_flow(ds, schema, features, settings):
    from flows.training import train_stage

    return train_stage(ds, schema, features, settings)


def _same_model(a, b) -> None:
    assert [f.best_epoch for f in a.fold_results] == [f.best_epoch for f in b.fold_results]
    assert np.array_equal(a.oof_raw, b.oof_raw)                       # bit for bit
    assert [f.metrics for f in a.fold_results] == [f.metrics for f in b.fold_results]
    assert a.params == b.params
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        assert np.array_equal(wa, wb)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, data, contract, prefect_server):
    settings = _settings(tmp_path_factory.mktemp("serial"))
    return _train_in_a_flow(data, *contract, settings)


def test_folds_on_a_dask_cluster_of_two_workers_give_the_serial_model(tmp_path, data, contract, serial, figure,
                                                                      prefect_server):
    from testkit.dask import dask_cluster

    with dask_cluster(tmp_path / "dask", workers=2) as address:
        settings = _settings(tmp_path, runner="dask", address=address)
        parallel = _train_in_a_flow(data, *contract, settings)
    _same_model(serial, parallel)
    where = {fold.fold: fold.where for fold in parallel.fold_results}
    assert len(set(where.values())) == 2 and f"{socket.gethostname()}:{os.getpid()}" not in where.values(), where
    figure("cv_seconds_serial", serial.timings["cv_seconds"], "s", "3 folds, 900 rows, FAST_CONFIG")
    figure("cv_seconds_dask_2_workers", parallel.timings["cv_seconds"], "s", "same, on a 2-worker cluster")


def test_folds_on_a_local_cluster_give_the_serial_model(tmp_path, data, contract, serial, prefect_server):
    settings = _settings(tmp_path, runner="dask", workers=2)
    parallel = _train_in_a_flow(data, *contract, settings)
    _same_model(serial, parallel)
    assert f"{socket.gethostname()}:{os.getpid()}" not in {fold.where for fold in parallel.fold_results}


def test_a_search_on_a_local_cluster_tries_and_chooses_as_the_serial_one(tmp_path, data, contract, prefect_server):
    """Each candidate's folds run as parallel tasks; the record and the shipped model are the serial run's."""
    serial = _train_in_a_flow(data, *contract, _settings(tmp_path / "serial", search=True))
    parallel = _train_in_a_flow(data, *contract, _settings(tmp_path / "dask", search=True, runner="dask", workers=2))
    _same_model(serial, parallel)

    def choice(record):
        return record["chosen"], [(c["status"], c["val_losses"], c["val_auc"]) for c in record["candidates"]]

    assert choice(serial.search) == choice(parallel.search)
    assert [c["status"] for c in parallel.search["candidates"]] in (["chosen", "tried"], ["tried", "chosen"])
    assert f"{socket.gethostname()}:{os.getpid()}" not in {fold.where for fold in parallel.fold_results}
