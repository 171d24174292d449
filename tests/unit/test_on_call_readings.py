"""On-call readings: cached, refreshed at most once per period, never holding a scrape past its wait.

A fake clock drives the cache; the reads are fakes that count calls, fail, or block on an event.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from orders_api.api.on_call_gauges import CachedReading, OnCallGauges, Reading

pytestmark = pytest.mark.unit

#: Seconds any wait in these tests may take before the test fails instead of hanging.
TIMEOUT_S = 5.0


class Clock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Answers the values it is given in turn; an exception in the list is raised instead."""

    def __init__(self, *answers: float | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_value_is_reused_until_it_is_older_than_max_age() -> None:
    clock, source = Clock(), Source(3.0, 5.0)
    reading = CachedReading("depth", source, max_age_s=10, wait_s=TIMEOUT_S, clock=clock)

    assert reading.get() == Reading(3.0, 0.0, up=True)
    clock.now += 9
    assert reading.get() == Reading(3.0, 9.0, up=True)
    assert source.calls == 1
    clock.now += 1
    assert reading.get() == Reading(5.0, 0.0, up=True)
    assert source.calls == 2


def test_a_failed_read_keeps_the_last_value_with_its_age_and_reports_down() -> None:
    clock, source = Clock(), Source(3.0, ConnectionError("refused"))
    reading = CachedReading("depth", source, max_age_s=10, wait_s=TIMEOUT_S, clock=clock)
    reading.get()
    clock.now += 15

    assert reading.get() == Reading(3.0, 15.0, up=False)


def test_a_failed_read_is_not_tried_again_before_max_age() -> None:
    clock, source = Clock(), Source(ConnectionError("refused"), 4.0)
    reading = CachedReading("depth", source, max_age_s=10, wait_s=TIMEOUT_S, clock=clock)

    assert reading.get() == Reading(None, None, up=False)
    clock.now += 5
    assert reading.get() == Reading(None, None, up=False)
    assert source.calls == 1
    clock.now += 5
    assert reading.get() == Reading(4.0, 0.0, up=True)


def test_a_slow_read_does_not_hold_the_caller_past_its_wait_and_is_not_started_twice() -> None:
    release, calls = threading.Event(), []

    def slow() -> float:
        calls.append(1)
        assert release.wait(TIMEOUT_S)
        return 7.0

    reading = CachedReading("age", slow, max_age_s=0, wait_s=0.05)
    started = time.monotonic()
    assert reading.get() == Reading(None, None, up=False)
    assert reading.get() == Reading(None, None, up=False)
    assert time.monotonic() - started < 1.0
    assert len(calls) == 1, "a second read started while the first was in flight"
    release.set()
    deadline = time.monotonic() + TIMEOUT_S
    while reading.get().value is None:
        assert time.monotonic() < deadline, "the slow read never landed"
        time.sleep(0.01)

    assert reading.get().value == 7.0


def test_the_collector_reports_unknown_as_nan_and_reads_nothing_when_registered() -> None:
    source = Source(ConnectionError("refused"))
    gauges = OnCallGauges({"orders_dlq_messages": (CachedReading("dlq", source, wait_s=TIMEOUT_S), "help")})
    registry = CollectorRegistry()

    registry.register(gauges)
    assert source.calls == 0

    assert math.isnan(registry.get_sample_value("orders_dlq_messages") or 0.0)
    assert math.isnan(
        registry.get_sample_value("orders_on_call_gauge_age_seconds", {"gauge": "orders_dlq_messages"}) or 0.0
    )
    assert registry.get_sample_value("orders_on_call_gauge_up", {"gauge": "orders_dlq_messages"}) == 0.0
