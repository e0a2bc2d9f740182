"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
PROBABILITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
DIVERGENCE_BUCKETS = (1e-6, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # The process (CPU, memory, file descriptors) and Python runtime series, as the default registry has.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
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
        self.loaded = Gauge("serving_loaded_versions", "Number of versions loaded", registry=r)
        self.default = Gauge("serving_default_version", "1 for the version that is the default", ["version"],
                             registry=r)
        self.batch_rows = Histogram("serving_scorer_batch_rows", "Rows per model call (requests batched together)",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("serving_scorer_queue_depth", "Jobs waiting for the model", registry=r)
        self.shadow_rows = Counter("serving_shadow_rows", "Rows scored by the shadow version", ["version"],
                                   registry=r)
        self.probe_requests = Counter("serving_probe_requests", "Requests marked X-Pipeline-Probe (smoke tests, "
                                      "the monitor): kept out of every other series", ["endpoint", "status"],
                                      registry=r)
        self.feedback_labels = Counter("serving_feedback_labels", "Labels received through /feedback, by outcome",
                                       ["outcome"], registry=r)
        # Set at each scrape from the last hour the monitoring recorder holds (serving.drift), so
        # Prometheus rules can follow the guide's drift and calibration rows too.
        self.healthy = Gauge("serving_healthy", "1 while /health answers healthy", registry=r)
        self.feature_psi = Gauge("serving_feature_psi", "PSI of each input over the last hour against the "
                                 "default version's reference (absent below the minimum sample)",
                                 ["version", "feature"], registry=r)
        self.prediction_mean = Gauge("serving_prediction_mean", "Mean probability served over the last hour",
                                     ["version"], registry=r)
        self.prediction_baseline_mean = Gauge("serving_prediction_baseline_mean", "Mean calibrated probability "
                                              "on the training data (the export's reference)", ["version"],
                                              registry=r)
        self.ece = Gauge("serving_ece", "ECE (10 equal-width bins) of the labelled rows of the last hour",
                         ["version"], registry=r)
        self.labelled_rows = Gauge("serving_labelled_rows", "Labelled rows of the last hour", ["version"],
                                   registry=r)
        self.shadow_divergence = Histogram("serving_shadow_abs_divergence", "|p(shadow) - p(served)| per row",
                                           ["version"], buckets=DIVERGENCE_BUCKETS, registry=r)
