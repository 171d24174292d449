"""What tests read back from PostgreSQL, with a connection of their own, to see what was really committed."""

from __future__ import annotations

import psycopg2.extensions


def order_row(database: psycopg2.extensions.connection, order_id: str) -> dict[str, object] | None:
    """The committed row of an order, read with a connection of the test's own."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT status, attempts, placed_at, last_error, claimed_until, limit_price, quantity"
            " FROM orders WHERE id = %s",
            (order_id,),
        )
        row = cursor.fetchone()
        if row is None:
            return None
        names = [column.name for column in cursor.description or ()]
    return dict(zip(names, row, strict=True))
