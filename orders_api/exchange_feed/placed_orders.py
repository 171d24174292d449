"""Which orders the simulated exchange has: the placed orders in our own database.

A real exchange knows its orders because they were sent to it. Reading our ``orders`` table
(read-only, the orders the stand-in placed) is the simulator's shortcut to the same knowledge,
without changing :mod:`orders_api.stock_exchange`, whose behaviour is a contract.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg2
import psycopg2.extensions

from orders_api.exchange_feed.stories import PlacedOrder

_NEXT_PLACED = """
    SELECT id, type, side, limit_price, quantity, placed_at FROM orders
    WHERE status = 'placed' AND (placed_at, id) > (%s, %s::uuid)
    ORDER BY placed_at, id LIMIT %s
"""


@dataclass(frozen=True)
class Cursor:
    """Where the last adopted order sits in ``(placed_at, id)`` order; the next poll starts after it."""

    placed_at: datetime
    order_id: uuid.UUID


#: Before every order: no order is placed before the epoch.
START = Cursor(datetime.fromisoformat("1970-01-01T00:00:00+00:00"), uuid.UUID(int=0))


class PlacedOrders:
    """Polls PostgreSQL for orders placed after a cursor, over one read-only connection."""

    def __init__(self, database_url: str, connect_timeout_s: int = 5) -> None:
        self._database_url = database_url
        self._connect_timeout_s = connect_timeout_s
        self._connection: psycopg2.extensions.connection | None = None

    def after(self, cursor: Cursor, limit: int) -> list[tuple[PlacedOrder, Cursor]]:
        """Up to ``limit`` orders placed after ``cursor``, each with the cursor just past it.

        A lost connection is dropped, so that the next poll reconnects; the error goes up.
        """
        connection = self._connect()
        try:
            with connection.cursor() as rows:
                rows.execute(_NEXT_PLACED, (cursor.placed_at, str(cursor.order_id), limit))
                found = rows.fetchall()
        except psycopg2.Error:
            self.close()
            raise
        return [
            (
                PlacedOrder(
                    id=uuid.UUID(str(order_id)),
                    type=str(order_type),
                    side=str(side),
                    limit_price=None if limit_price is None else Decimal(limit_price),
                    quantity=int(quantity),
                ),
                Cursor(placed_at, uuid.UUID(str(order_id))),
            )
            for order_id, order_type, side, limit_price, quantity, placed_at in found
        ]

    def close(self) -> None:
        """Close the connection, if open."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> psycopg2.extensions.connection:
        if self._connection is None or self._connection.closed:
            connection = psycopg2.connect(self._database_url, connect_timeout=self._connect_timeout_s)
            connection.set_session(readonly=True, autocommit=True)
            self._connection = connection
        return self._connection
