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


def waiting_for_advisory_locks(database: psycopg2.extensions.connection) -> int:
    """How many sessions wait on an advisory lock: workers waiting on an order's creation lock."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = pg_locks.database"
            " WHERE locktype = 'advisory' AND NOT granted AND d.datname = current_database()"
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])
