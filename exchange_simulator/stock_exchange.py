"""Stand-in for the stock exchange: slow, and unavailable one call in ten.

Its behaviour is a contract shared with the real exchange's client and must not change: tests
may patch ``random.random`` and ``time.sleep`` through this module, which is why both are used
through their modules.
"""

from __future__ import annotations

import random
import time

from orders_api.domain import Order

#: Chance, from 0 to 1, that a call finds the exchange available.
AVAILABILITY = 0.9
#: Seconds one successful placement takes.
PLACEMENT_LATENCY_S = 0.5


class OrderPlacementError(Exception):
    """The exchange could not take the order now; trying again later may succeed."""


def place_order(order: Order | None) -> None:
    """Place ``order`` on the exchange.

    :raises ValueError: no order was given.
    :raises OrderPlacementError: the exchange's connection is not available.
    """
    if not order:
        raise ValueError("No order given to place at the stock exchange")
    if random.random() >= AVAILABILITY:
        raise OrderPlacementError("Failed to place order at stock exchange. Connection not available")
    time.sleep(PLACEMENT_LATENCY_S)
