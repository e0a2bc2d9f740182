"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Under ``python -m serving`` (gunicorn, one or more workers) the counters and histograms live in
prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, run/metrics/, emptied by the
master at start; a dead worker's live gauges are dropped by the master's ``child_exit`` hook) and
``exposition`` merges every worker's, so a scrape of any worker shows the host. The gauges derived
from the monitoring windows are computed at each scrape from the host-wide windows (``ScrapeGauges``:
never in the files, so a cleared series cannot linger). The process and runtime series
(``process_*``, ``python_*``) are those of the worker that answered the scrape.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
PROBABILITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
DIVERGENCE_BUCKETS = (1e-6, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384)


# Set at each scrape from the last hour the monitoring recorder holds (serving.contract.drift), so Prometheus
# rules can follow the guide's drift and calibration rows too: name -> (help, label names).
SCRAPE_GAUGES = {
    "serving_healthy": ("1 while /health answers healthy", ()),
    "serving_feature_psi": ("PSI of each input over the last hour against the default version's reference "
                            "(absent below the minimum sample)", ("version", "feature")),
    "serving_prediction_mean": ("Mean probability served over the last hour", ("version",)),
    "serving_prediction_baseline_mean": ("Mean calibrated probability on the training data (the export's "
                                         "reference)", ("version",)),
    "serving_ece": ("ECE (10 equal-width bins) of the labelled rows of the last hour", ("version",)),
    "serving_labelled_rows": ("Labelled rows of the last hour", ("version",)),
}


log = logging.getLogger(__name__)


class AllocatedMmapedDict(MmapedDict):
    """prometheus_client's multiprocess file, its disk blocks allocated (``posix_fallocate``) before they are
    written through the mmap: a new series on a full disk raises OSError (ENOSPC) instead of killing the
    worker with SIGBUS (its file is sparse: a page first written on a full disk has no block to go to)."""

    def __init__(self, filename, read_mode=False):
        if not read_mode:
            with open(filename, "a+b") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    os.posix_fallocate(f.fileno(), 0, _INITIAL_MMAP_SIZE)
        super().__init__(filename, read_mode)

    def _init_value(self, key):
        encoded = key.encode("utf-8")
        size = 4 + len(encoded) + (8 - (len(encoded) + 4) % 8) + 16    # as MmapedDict packs a new entry
        capacity = self._capacity
        while self._used + size > capacity:
            capacity *= 2
        if capacity > self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)


class ScrapeGauges:
    """The gauges computed at a scrape: exactly the values of the last ``set`` (a series left out is absent)."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[str, ...], float]] = {}

    def set(self, values_by_name: dict[str, dict[tuple[str, ...], float]]) -> None:
        self._values = values_by_name        # replaced whole: a concurrent collect sees the old or the new

    def collect(self):
        current = self._values
        for name, (doc, labels) in SCRAPE_GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for key, value in current.get(name, {}).items():
                family.add_metric(list(key), value)
            yield family


def _runtime(registry: CollectorRegistry) -> None:
    # The process (CPU, memory, file descriptors) and Python runtime series, as the default registry has.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class Metrics:
    """The server's metrics; with ``multiprocess_dir`` (gunicorn sets PROMETHEUS_MULTIPROC_DIR) the counters,
    histograms and gauges are kept in that folder's files and ``exposition`` merges every worker's."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            values.MmapedDict = AllocatedMmapedDict         # read when a value's file is opened
        if multiprocess_dir is not None and values.ValueClass is values.MutexValue:
            # prometheus_client picked its value class at import, before the directory was known.
            values.ValueClass = values.MultiProcessValue()
        self.registry = CollectorRegistry()
        r = self.registry
        self.scrape_gauges = ScrapeGauges()
        if multiprocess_dir is None:
            self.exposition = r
            _runtime(r)
            r.register(self.scrape_gauges)
        else:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition, path=str(multiprocess_dir))
            _runtime(self.exposition)
            self.exposition.register(self.scrape_gauges)
        self.requests = Counter("serving_requests", "HTTP requests by endpoint, status and version",
                                ["endpoint", "status", "version"], registry=r)
        self.latency = Histogram("serving_request_latency_seconds", "Time in the handler, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Counter("serving_predicted_rows", "Rows scored, by version", ["version"], registry=r)
        self.probability = Histogram("serving_prediction_probability", "Calibrated probabilities served",
                                     ["version"], buckets=PROBABILITY_BUCKETS, registry=r)
        self.input_problems = Counter("serving_input_problems", "Rejected inputs by feature and issue",
                                      ["feature", "issue"], registry=r)
        self.model_events = Counter("serving_model_events", "Loads, failed loads, swaps, unloads, splits",
                                    ["event"], registry=r)
        # Each worker serves the same versions (serving/workers/sync.py): the largest of the live workers' values.
        self.loaded = Gauge("serving_loaded_versions", "Number of versions loaded", registry=r,
                            multiprocess_mode="livemax")
        self.default = Gauge("serving_default_version", "1 for the version that is the default", ["version"],
                             registry=r, multiprocess_mode="livemax")
        self.batch_rows = Histogram("serving_scorer_batch_rows", "Rows per model call (requests batched together)",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("serving_scorer_queue_depth", "Jobs waiting for the model (the live workers' "
                                 "sum, each as of its last scrape)", registry=r, multiprocess_mode="livesum")
        self.shadow_rows = Counter("serving_shadow_rows", "Rows scored by the shadow version", ["version"],
                                   registry=r)
        self.probe_requests = Counter("serving_probe_requests", "Requests marked X-Pipeline-Probe (smoke tests, "
                                      "the monitor): kept out of every other series", ["endpoint", "status"],
                                      registry=r)
        self.feedback_labels = Counter("serving_feedback_labels", "Labels received through /feedback, by outcome",
                                       ["outcome"], registry=r)
        self.shadow_divergence = Histogram("serving_shadow_abs_divergence", "|p(shadow) - p(served)| per row",
                                           ["version"], buckets=DIVERGENCE_BUCKETS, registry=r)
        self._default_versions: set[str] = set()
        self.not_counted: dict[str, int] = {}     # requests per endpoint whose count a full disk lost

    def set_default(self, version: str | None) -> None:
        """serving_default_version: 1 for ``version``, 0 for the versions that were default before (set, not
        cleared: in the multiprocess files a cleared series would keep its last value)."""
        for v in self._default_versions - {version}:
            self.default.labels(v).set(0)
        if version:
            self.default.labels(version).set(1)
            self._default_versions.add(version)


FEW_VALUES = 8   # below this, observe_many calls Histogram.observe per value


def observe_many(histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for each of ``values``, in one count per bucket instead of one call per value.

    prometheus_client has no bulk observe; this writes what ``Histogram.observe`` writes (``_sum`` and one
    bucket per value: the first bound at or above it) through the same value objects (multiprocess files
    included)."""
    if values.size < FEW_VALUES:       # numpy's set-up costs more than a few plain calls
        for value in values.tolist():
            histogram.observe(value)
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, n in zip(histogram._buckets, counts[:len(bounds)].tolist(), strict=True):
        if n:
            bucket.inc(n)
