"""The stock exchange stand-in's contract, which the real exchange's client shares.

The workers' retry policy rests on it: a missing order is a ``ValueError`` (never retried), an
unavailable exchange is an ``OrderPlacementError`` (retried), and a success takes half a second.
Randomness and sleeping are replaced through the module, as the contract allows, so the tests
are deterministic and instant.
"""

from __future__ import annotations

import re

import pytest

from exchange_simulator.stock_exchange import OrderPlacementError, place_order
from tests.unit.fakes import make_order

pytestmark = pytest.mark.unit

CONNECTION_ERROR = "Failed to place order at stock exchange. Connection not available"


class Draws:
    """Stands in for ``random.random``: returns a fixed value and counts how often it was drawn."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.count = 0

    def __call__(self) -> float:
        self.count += 1
        return self.value


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` the exchange asks for, in seconds, without actually sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr("exchange_simulator.stock_exchange.time.sleep", recorded.append)
    return recorded


def draw(monkeypatch: pytest.MonkeyPatch, value: float) -> Draws:
    """Make the exchange's availability draw return ``value``."""
    draws = Draws(value)
    monkeypatch.setattr("exchange_simulator.stock_exchange.random.random", draws)
    return draws


@pytest.mark.parametrize("value", [0.0, 0.5, 0.8999, 0.899999999])
def test_places_the_order_and_takes_half_a_second_when_the_draw_is_below_nine_tenths(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float], value: float
) -> None:
    draws = draw(monkeypatch, value)

    place_order(make_order())

    assert sleeps == [0.5]
    assert draws.count == 1


@pytest.mark.parametrize("value", [0.9, 0.95, 0.9999])
def test_reports_the_connection_as_unavailable_when_the_draw_is_nine_tenths_or_more(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float], value: float
) -> None:
    draws = draw(monkeypatch, value)

    with pytest.raises(OrderPlacementError, match=f"^{re.escape(CONNECTION_ERROR)}$"):
        place_order(make_order())

    assert sleeps == []
    assert draws.count == 1


@pytest.mark.parametrize(
    "missing",
    [
        pytest.param(None, id="None"),
        pytest.param({}, id="an empty mapping"),
        pytest.param(0, id="zero"),
    ],
)
def test_rejects_a_missing_order_without_drawing_or_sleeping(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float], missing: object
) -> None:
    # A draw of 0.0 would succeed, so only the missing order can explain the error.
    draws = draw(monkeypatch, 0.0)

    with pytest.raises(ValueError, match="No order given"):
        place_order(missing)  # type: ignore[arg-type]

    assert draws.count == 0
    assert sleeps == []


def test_an_unavailable_exchange_is_not_a_value_error_so_the_workers_retry_it() -> None:
    # The actor dead-letters ValueError at once; an outage must stay retryable.
    assert issubclass(OrderPlacementError, Exception)
    assert not issubclass(OrderPlacementError, ValueError)


def test_a_missing_order_wins_over_an_unavailable_exchange(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    draw(monkeypatch, 0.9999)

    with pytest.raises(ValueError, match="No order given"):
        place_order(None)
