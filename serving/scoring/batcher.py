"""One thread that runs the model: requests waiting at the same moment are scored in one call.

A SavedModel call costs about the same for 1 row as for 100, so under concurrent
load batching requests together multiplies throughput; with one client it adds
only a thread hand-off. The event loop never blocks on TensorFlow.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serving.contract.model import LoadedModel

if TYPE_CHECKING:   # the app hands its Prometheus series in; scoring does not depend on monitoring
    from serving.monitoring.prometheus import Metrics

log = logging.getLogger(__name__)


@dataclass
class Job:
    model: LoadedModel
    columns: dict[str, np.ndarray]
    n_rows: int
    future: Future


class BatchScorer:
    def __init__(self, metrics: Metrics, max_batch_rows: int = 20_000) -> None:
        self.metrics = metrics
        self.max_batch_rows = max_batch_rows
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, model: LoadedModel, columns: dict[str, np.ndarray], n_rows: int) -> Future:
        future: Future = Future()
        self._queue.put(Job(model, columns, n_rows, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:   # never let one bad batch end the only scorer thread
                log.exception("scorer: a batch failed outside the model call")

    def _step(self) -> bool:
        """Score what is queued, requests for one model in one call; True when asked to stop."""
        job = self._queue.get()
        if job is None:
            return True
        groups: dict[int, list[Job]] = {id(job.model): [job]}
        rows = job.n_rows
        stop = False
        while rows < self.max_batch_rows:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            groups.setdefault(id(nxt.model), []).append(nxt)
            rows += nxt.n_rows
        self.metrics.queue_depth.set(self._queue.qsize())
        for batch in groups.values():
            self._score(batch)
        return stop

    def _score(self, batch: list[Job]) -> None:
        # A request whose client went away has its future cancelled: leave it out (setting a result on
        # a cancelled future raises, and that used to end this, the only scorer thread).
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        model = batch[0].model
        try:
            if len(batch) == 1:
                columns = batch[0].columns
            else:
                columns = {name: np.concatenate([j.columns[name] for j in batch]) for name in batch[0].columns}
            raw, prob = model.score_columns(columns)
        except Exception as exc:  # a model failure fails its requests, never the thread
            log.exception("scoring %d request(s) failed", len(batch))
            for job in batch:
                job.future.set_exception(exc)
            return
        self.metrics.batch_rows.observe(raw.size)
        start = 0
        for job in batch:
            end = start + job.n_rows
            job.future.set_result((raw[start:end], prob[start:end]))
            start = end
