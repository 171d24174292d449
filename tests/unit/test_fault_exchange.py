"""The outage switch of the fault suite's and the benchmark's exchange (``orders_testkit.fault_exchange``).

Both count on it: the exchange-outage scenario and ``make bench`` switch it with a marker file.
The recorded exchange calls the real stand-in (half a second, one call in ten failing), so the
fault suite checks it on real placements instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange_simulator.stock_exchange import OrderPlacementError
from orders_testkit.fault_exchange import OUTAGE_MARKER_ENV, exchange_with_outage, fault_exchange
from tests.unit.fakes import FakeExchange, make_order
from workers.bootstrap import logged_exchange

pytestmark = pytest.mark.unit


def test_every_call_fails_while_the_marker_exists_and_reaches_the_exchange_once_it_is_gone(
    tmp_path: Path,
) -> None:
    marker, exchange = tmp_path / "exchange-down", FakeExchange()
    place = exchange_with_outage(marker, exchange)
    down, up = make_order(), make_order()

    marker.touch()
    with pytest.raises(OrderPlacementError):
        place(down)
    marker.unlink()
    place(up)

    assert exchange.orders == [up]


def test_without_the_variables_the_workers_get_the_production_exchange() -> None:
    assert fault_exchange({}) is logged_exchange


def test_the_marker_variable_puts_the_switch_in(tmp_path: Path) -> None:
    marker = tmp_path / "exchange-down"
    marker.touch()

    with pytest.raises(OrderPlacementError):
        fault_exchange({OUTAGE_MARKER_ENV: str(marker)})(make_order())
