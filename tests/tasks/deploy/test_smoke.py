"""The smoke test's check of every server process on the host (/model_info's ``workers`` section)."""

from __future__ import annotations

import pytest

from tasks.deploy.smoke import worker_failures

pytestmark = pytest.mark.unit

FILES = {"saved_model/saved_model.pb": "a" * 64, "calibrator.pkl": "b" * 64}


def _worker(pid: int, default: str = "2", files: dict | None = None) -> dict:
    return {"pid": pid, "generation": 3, "default": default, "last_error": None,
            "versions": {"1": {"files": {}}, default: {"metadata_sha256": "c" * 64, "files": files or FILES}}}


def test_every_worker_serving_the_version_with_its_files_passes():
    workers = {"count": 2, "expected": 2, "agree": True, "differences": [], "workers": [_worker(11), _worker(12)]}
    assert worker_failures(workers, "2", FILES) == []


def test_each_worker_at_fault_is_named_by_pid():
    workers = {"count": 2, "expected": 3, "agree": False, "starting": [13],
               "differences": ["worker pid 12 serves default 1 …"],
               "workers": [_worker(11, files={**FILES, "calibrator.pkl": "d" * 64}), _worker(12, default="1")]}
    failures = worker_failures(workers, "2", FILES)
    assert failures == [
        "/model_info: 2 of 3 server processes serve (starting: [13])",
        "/model_info: worker pid 11: file hashes of version 2 differ from the export's",
        "/model_info: worker pid 12 serves default version 1, expected 2",
        "/model_info: worker pid 12 has not loaded version 2",
        "/model_info: the server processes disagree: worker pid 12 serves default 1 …",
    ]
