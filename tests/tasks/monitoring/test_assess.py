"""The traffic numbers of an assessment."""

from __future__ import annotations

import pytest

from tasks.monitoring.assess import traffic

pytestmark = pytest.mark.unit


def test_traffic_rates_and_latency():
    out = traffic({"requests": 200, "rows": 400, "errors_4xx": 3, "errors_5xx": 1, "p50_ms": 2.0, "p95_ms": 9.0,
                   "p99_ms": 30.0, "rejected_by_feature": {"age": 3}}, minutes=10)
    assert out["requests_per_minute"] == 20 and out["error_rate"] == 0.02 and out["rate_5xx"] == 0.005
    assert out["latency_ms"] == {"p50": 2.0, "p95": 9.0, "p99": 30.0}
