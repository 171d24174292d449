"""The workers' own metrics: what each placement message came to, retries, dead letters, the breaker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from exchange_simulator.stock_exchange import OrderPlacementError
from orders_api.clock import utc_now
from orders_api.service_layer.placement import PlacementOutcome
from workers.metrics import WorkerMetrics

pytestmark = pytest.mark.unit


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_a_placed_order_is_counted_with_its_time_since_creation(registry: CollectorRegistry) -> None:
    metrics = WorkerMetrics(registry)

    metrics.handled(PlacementOutcome.PLACED, utc_now() - timedelta(seconds=3))

    assert registry.get_sample_value("orders_placements_total", {"outcome": "placed"}) == 1
    assert registry.get_sample_value("orders_created_to_placed_seconds_count") == 1
    assert 3 <= (registry.get_sample_value("orders_created_to_placed_seconds_sum") or 0) < 10
    assert registry.get_sample_value("orders_created_to_placed_seconds_bucket", {"le": "2.0"}) == 0
    assert registry.get_sample_value("orders_created_to_placed_seconds_bucket", {"le": "5.0"}) == 1


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (PlacementOutcome.ALREADY_PLACED, "already_placed"),
        (PlacementOutcome.ORPHAN_DROPPED, "orphan_dropped"),
    ],
)
def test_messages_that_placed_nothing_are_counted_by_outcome_without_a_placement_time(
    registry: CollectorRegistry, outcome: PlacementOutcome, label: str
) -> None:
    metrics = WorkerMetrics(registry)

    metrics.handled(outcome, utc_now() - timedelta(seconds=3))

    assert registry.get_sample_value("orders_placements_total", {"outcome": label}) == 1
    assert registry.get_sample_value("orders_created_to_placed_seconds_count") == 0


def test_retries_dead_letters_and_the_breaker_are_counted(registry: CollectorRegistry) -> None:
    metrics = WorkerMetrics(registry)

    metrics.retried("exchange_unavailable")
    metrics.retried("exchange_unavailable")
    metrics.gave_up(OrderPlacementError("down"))
    metrics.took_over()
    metrics.breaker_changed(True)

    assert (
        registry.get_sample_value("orders_placement_retries_total", {"reason": "exchange_unavailable"}) == 2
    )
    assert registry.get_sample_value("orders_dead_letters_total", {"error": "OrderPlacementError"}) == 1
    assert registry.get_sample_value("orders_claims_taken_over_total") == 1
    assert registry.get_sample_value("orders_exchange_breaker_open") == 1
    metrics.breaker_changed(False)
    assert registry.get_sample_value("orders_exchange_breaker_open") == 0
