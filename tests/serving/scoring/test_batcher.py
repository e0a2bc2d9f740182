"""The scorer thread survives what clients do: a request abandoned mid-wait never stops it."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from serving.monitoring.prometheus import Metrics
from serving.scoring.batcher import BatchScorer

pytestmark = pytest.mark.unit


class Model:
    def score_columns(self, columns):
        x = columns["x"]
        return x, x / 10


@pytest.mark.faults
def test_a_cancelled_request_is_skipped_and_the_thread_keeps_scoring():
    scorer = BatchScorer(Metrics())
    try:
        model = Model()
        abandoned: Future = Future()
        abandoned.cancel()                 # what asyncio does when the client disconnects
        from serving.scoring.batcher import Job

        scorer._queue.put(Job(model, {"x": np.array([1.0])}, 1, abandoned))
        kept = scorer.submit(model, {"x": np.array([2.0, 3.0])}, 2)
        raw, prob = kept.result(timeout=10)
        assert raw.tolist() == [2.0, 3.0] and prob.tolist() == [0.2, 0.3]
        assert scorer.alive
        later = scorer.submit(model, {"x": np.array([4.0])}, 1)
        assert later.result(timeout=10)[0].tolist() == [4.0]
    finally:
        scorer.close()
