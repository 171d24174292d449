"""The execution feed's metrics server: served when it can be, never the reason a process stops."""

from __future__ import annotations

import logging
import socket

import pytest

from orders_api.execution_feed.metrics import ApplierMetrics, IngestorMetrics, serve
from orders_testkit.processes import free_port
from tests.prometheus_samples import scrape_port


def test_the_registry_is_served_on_the_port_given() -> None:
    metrics = IngestorMetrics()
    metrics.resume_point.set(42)
    port = free_port()

    serve(metrics.registry, "127.0.0.1", port)

    assert scrape_port(port)[("orders_feed_resume_point", frozenset())] == 42


def test_a_port_taken_by_another_process_is_logged_and_the_caller_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches a metrics port in use (a second ``make run``, a test beside it) crashing the applier."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR):
            serve(ApplierMetrics().registry, "127.0.0.1", port)

    assert "cannot serve metrics" in caplog.text


def test_port_zero_serves_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        serve(ApplierMetrics().registry, "127.0.0.1", 0)

    assert "metrics" not in caplog.text
