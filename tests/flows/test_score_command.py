"""``python -m flows score``'s own lines: what a person reads after a job, and what --version takes."""

from __future__ import annotations

import pytest

from flows.score_command import print_summary, version_or_alias
from tasks.monitoring.settings import MonitoringSettings
from tasks.scoring.record import batch_drift, score_report
from tests.tasks.scoring.test_score_record import REFERENCE, RNG, window

pytestmark = pytest.mark.unit


def test_the_summary_warns_once_per_threshold_crossed(capsys):
    drift = batch_drift(window(RNG.normal(1.5, size=5000), RNG.uniform(0.6, 0.99, 5000)), REFERENCE,
                        MonitoringSettings())
    summary = {"model": "m", "version": "3", "data": "in.csv", "drift": drift, "run_id": "abc", "run_link": "run abc",
               "result": {"rows": 10, "scored": 9, "rejected": 1, "output": "o.parquet", "rejects": "r.csv",
                          "seconds": 1.0, "rows_per_s": 10.0, "reasons": {"age: out of range": 1},
                          "input_sha256": "0" * 64}}
    print_summary(summary)
    out, err = capsys.readouterr()
    assert "m version 3 scored 10 rows of in.csv: 9 written to o.parquet, 1 rejected" in out
    assert "rejected: age: out of range (1 rows)" in out
    assert [ln for ln in err.splitlines() if ln.startswith("warning: drift:")] == [
        f"warning: drift: {a['message']} — {a['action']}" for a in drift["alarms"]]
    assert "| x |" in score_report(summary) and "**critical**" in score_report(summary)


def test_version_is_a_number_or_an_alias():
    import argparse

    assert [version_or_alias(v) for v in ("champion", "challenger", "07")] == ["champion", "challenger", "7"]
    with pytest.raises(argparse.ArgumentTypeError, match="neither a registered version number"):
        version_or_alias("latest")
