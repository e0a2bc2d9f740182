"""Alarm channels for real: Slack's webhook JSON and PagerDuty's Events API v2, to a local receiver."""

from __future__ import annotations

import pytest

from tasks.monitoring.alarms import AlarmBook, PagerDutyEvents, SlackWebhook, deliver
from tasks.monitoring.rules import CRITICAL, WARNING, Alarm
from testkit.receiver import Receiver

pytestmark = pytest.mark.integration


def test_critical_pages_and_posts_warning_posts_resolution_resolves(tmp_path):
    with Receiver() as rx:
        channels = {"slack": SlackWebhook(rx.url + "/slack"),
                    "pagerduty": PagerDutyEvents(rx.url + "/pd", routing_key="R0UT1NG")}
        book = AlarmBook(tmp_path)
        fired = book.update("t1", "credit-risk", {"3": [Alarm("latency_p95", CRITICAL, 250.0, 200.0, "p95 high",
                                                              "Scale or optimize"),
                                                        Alarm("psi:age", WARNING, 0.2, 0.15, "age drifted",
                                                              "Investigate data drift")]}, now=1.0)
        sent = deliver(fired, channels)
        assert sorted(sent.values()) == [["pagerduty", "slack"], ["slack"]]
        (trigger,) = rx.on("/pd")
        assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "R0UT1NG"
        assert trigger["payload"]["severity"] == "critical" and trigger["dedup_key"] == "t1|3|latency_p95"
        assert len(rx.on("/slack")) == 2 and "[CRITICAL] credit-risk v3 on t1: p95 high" in rx.on("/slack")[0]["text"]
        deliver(book.update("t1", "credit-risk", {}, now=2.0), channels)
        resolve = rx.on("/pd")[-1]
        assert resolve == {"routing_key": "R0UT1NG", "dedup_key": "t1|3|latency_p95", "event_action": "resolve"}
        assert sum("[RESOLVED]" in b["text"] for b in rx.on("/slack")) == 2


def test_a_failing_channel_is_recorded_not_raised(tmp_path):
    with Receiver(status=500) as rx:
        fired = AlarmBook(tmp_path).update("t1", "m", {"3": [Alarm("ece", WARNING, 0.06, 0.05, "x", "y")]}, now=1.0)
        sent = deliver(fired, {"slack": SlackWebhook(rx.url + "/slack")})
        assert list(sent.values()) == [["slack: FAILED (HTTPStatusError)"]]
        assert deliver(fired, {}) == {fired[0].key: ["slack: not configured"]}
