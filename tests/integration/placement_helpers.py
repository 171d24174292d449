"""Helpers for tests that run a worker: a recording exchange, bounded waits, orders to place."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
import pytest

from exchange_simulator import stock_exchange
from orders_api.domain import Order, OrderType, Side
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.checks import order_row

#: A valid order body for ``POST /orders``.
ORDER = {"type": "limit", "side": "sell", "instrument": "GB0002634946", "limit_price": "12.34", "quantity": 7}
#: Seconds any wait for the worker may take before the test fails instead of hanging.
SETTLE_TIMEOUT_S = 20


class RecordingExchange:
    """The real stock exchange stand-in, with every call recorded; ``fail_with`` makes it raise first."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.calls: list[uuid.UUID] = []
        self.fail_with = fail_with
        self._lock = threading.Lock()

    def __call__(self, order: Order) -> None:
        with self._lock:
            self.calls.append(order.id)
        if self.fail_with is not None:
            raise self.fail_with
        stock_exchange.place_order(order)


def eventually(check: Callable[[], Any], timeout_s: float = SETTLE_TIMEOUT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s: {check.__doc__ or check}")
        time.sleep(0.05)


def settled_row(database: psycopg2.extensions.connection, order_id: str) -> dict[str, object]:
    def settled() -> dict[str, object] | None:
        """the order leaves pending"""
        row = order_row(database, order_id)
        return row if row is not None and row["status"] != "pending" else None

    result: dict[str, object] = eventually(settled)
    return result


def queue_drained(rabbit: RabbitAdmin, queue: str) -> None:
    """Wait until ``queue`` holds no message, ready or unacked."""

    def drained() -> bool:
        """the queue is empty"""
        return bool(rabbit.queue(queue).get("messages", 1) == 0)

    eventually(drained)


def new_order() -> Order:
    """A market order built directly, for tests that store and publish it themselves."""
    return Order(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        type=OrderType.MARKET,
        side=Side.BUY,
        instrument="US0378331005",
        limit_price=None,
        quantity=1,
    )
