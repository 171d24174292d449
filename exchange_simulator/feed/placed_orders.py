"""Which orders the simulated exchange has: the placed orders in our own database.

A real exchange knows its orders because they were sent to it. Reading our ``orders`` table
(read-only, the orders the stand-in placed) is the simulator's shortcut to the same knowledge,
without changing :mod:`exchange_simulator.stock_exchange`, whose behaviour is a contract.

A ``(placed_at, id)`` cursor alone would miss orders: a worker stamps ``placed_at`` from its own
clock before its COMMIT, so a slow transaction (or a worker whose clock lags) commits an order
behind a cursor that has already moved past it. :meth:`PlacedOrders.behind` re-reads a window
behind the cursor for such late commits; the producer adopts those it has not seen.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions

from exchange_simulator.feed.stories import PlacedOrder

_NEXT_PLACED = """
    SELECT id, type, side, limit_price, quantity, placed_at FROM orders
    WHERE status = 'placed' AND (placed_at, id) > (%s, %s::uuid)
    ORDER BY placed_at, id LIMIT %s
"""

_LATE_COMMITS = """
    SELECT id, type, side, limit_price, quantity, placed_at FROM orders
    WHERE status = 'placed' AND placed_at > %s AND (placed_at, id) <= (%s, %s::uuid)
    ORDER BY placed_at, id
"""


_DATABASE = "SELECT datname, oid FROM pg_database WHERE datname = current_database()"


@dataclass(frozen=True, order=True)
class Cursor:
    """Where the last adopted order sits in ``(placed_at, id)`` order, as cursors compare.

    The next poll starts after it.
    """

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
        return self._read(_NEXT_PLACED, (cursor.placed_at, str(cursor.order_id), limit))

    def behind(self, cursor: Cursor, window: timedelta) -> list[tuple[PlacedOrder, Cursor]]:
        """The orders placed within ``window`` before ``cursor``, up to it: where late commits land."""
        return self._read(_LATE_COMMITS, (cursor.placed_at - window, cursor.placed_at, str(cursor.order_id)))

    def _read(self, query: str, parameters: tuple[object, ...]) -> list[tuple[PlacedOrder, Cursor]]:
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
            for order_id, order_type, side, limit_price, quantity, placed_at in self._rows(query, parameters)
        ]

    def database(self) -> tuple[str, int]:
        """The name and oid of the orders' database: which of the feed's logs belongs to it."""
        [(name, oid)] = self._rows(_DATABASE, ())
        return str(name), int(oid)

    def _rows(self, query: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Every row of ``query``; a failed read drops the connection, so that the next one reconnects."""
        connection = self._connect()
        try:
            with connection.cursor() as rows:
                rows.execute(query, parameters)
                return rows.fetchall()
        except psycopg2.Error:
            self.close()
            raise

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
