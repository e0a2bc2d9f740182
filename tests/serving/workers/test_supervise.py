"""The server under gunicorn: how many workers, their share of the CPUs, the master's metrics folder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from serving.settings import threads_per_worker

pytestmark = pytest.mark.unit

@pytest.mark.parametrize("workers, cpus, threads", [(None, 2, 2), (1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 16, 8)])
def test_each_worker_gets_its_share_of_the_cpus(workers, cpus, threads):
    assert threads_per_worker(workers, cpus) == threads


def test_several_workers_without_a_state_file_are_refused(monkeypatch, capsys):
    from serving.__main__ import main

    monkeypatch.delenv("SERVING_STATE_FILE", raising=False)
    monkeypatch.delenv("SERVING_WORKERS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--workers", "2"])
    assert exit_.value.code == 2 and "2 workers need SERVING_STATE_FILE" in capsys.readouterr().err


@pytest.mark.parametrize("state_file, expected", [(True, "cpus"), (False, 1)])
def test_the_default_is_one_worker_per_cpu_with_a_state_file_and_one_without(monkeypatch, tmp_path, state_file,
                                                                             expected):
    import serving.workers.supervise
    from serving.__main__ import main
    from serving.contract.processes import available_cpus

    started = []
    monkeypatch.setattr(serving.workers.supervise, "run",
                        lambda app, host, port, level, workers: started.append(workers))
    monkeypatch.delenv("SERVING_WORKERS", raising=False)
    if state_file:
        monkeypatch.setenv("SERVING_STATE_FILE", str(tmp_path / "run" / "serving-state.json"))
    else:
        monkeypatch.delenv("SERVING_STATE_FILE", raising=False)
    assert main([]) == 0
    assert started == [available_cpus() if expected == "cpus" else 1]


def test_the_master_empties_the_metrics_folder_and_drops_a_dead_workers_live_gauges(tmp_path, monkeypatch):

    from serving.workers.supervise import metrics_folder, worker_exited

    folder = tmp_path / "metrics"
    folder.mkdir()
    for name in ("counter_41.db", "gauge_livemax_41.db", "gauge_livesum_42.db"):
        (folder / name).write_bytes(b"x")
    assert metrics_folder(tmp_path / "serving-state.json") == folder and list(folder.iterdir()) == []
    for name in ("counter_41.db", "gauge_livemax_41.db", "gauge_livesum_42.db"):
        (folder / name).write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    worker_exited(None, SimpleNamespace(pid=41))
    assert sorted(p.name for p in folder.iterdir()) == ["counter_41.db", "gauge_livesum_42.db"]
