"""Alarm state between runs: fire once, stay quiet while firing, resolve once."""

from __future__ import annotations

import json

import pytest

from tasks.monitoring.alarms import FIRING, RESOLVED, AlarmBook, route
from tasks.monitoring.rules import CRITICAL, WARNING, Alarm

pytestmark = pytest.mark.unit


def _alarm(rule="psi:age", level=WARNING, value=0.2):
    return Alarm(rule, level, value, 0.15, f"{rule} is {value}", "Investigate data drift")


def test_an_alarm_fires_once_changes_level_and_resolves(tmp_path):
    book = AlarmBook(tmp_path)
    first = book.update("t1", "m", {"3": [_alarm()]}, now=1.0)
    assert [(t.state, t.level) for t in first] == [(FIRING, WARNING)]
    book.save(first, {})
    again = AlarmBook(tmp_path).update("t1", "m", {"3": [_alarm(value=0.21)]}, now=2.0)   # state survives the run
    assert again == []
    book = AlarmBook(tmp_path)
    worse = book.update("t1", "m", {"3": [_alarm(level=CRITICAL, value=0.3)]}, now=3.0)
    assert [(t.state, t.level) for t in worse] == [(FIRING, CRITICAL)]
    gone = book.update("t1", "m", {}, now=4.0)
    assert [(t.state, t.alarm["rule"]) for t in gone] == [(RESOLVED, "psi:age")] and book.firing == {}
    book.save(worse + gone, {worse[0].key: ["pagerduty", "slack"]})
    history = [json.loads(line) for line in (tmp_path / "alarm-history.jsonl").read_text().splitlines()]
    assert [h["state"] for h in history] == [FIRING, FIRING, RESOLVED]
    assert history[1]["sent_to"] == ["pagerduty", "slack"]


def test_only_the_checked_target_resolves(tmp_path):
    book = AlarmBook(tmp_path)
    book.update("t1", "m", {"3": [_alarm()]}, now=1.0)
    book.update("t2", "m", {"3": [_alarm()]}, now=1.0)
    assert [t.target for t in book.update("t2", "m", {}, now=2.0)] == ["t2"]
    assert sorted(book.firing) == ["t1|3|psi:age"]


def test_routing_follows_the_guide():
    book = AlarmBook.__new__(AlarmBook)
    book.firing = {}
    crit = book.update("t", "m", {"1": [_alarm(level=CRITICAL)]}, 1.0)[0]
    warn = book.update("t", "m", {"1": [_alarm(rule="ece")]}, 1.0)[0]
    assert route(crit) == ("pagerduty", "slack") and route(warn) == ("slack",)
