"""Idempotency keys in PostgreSQL, claimed through the table's primary key within the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa
from psycopg2 import errors
from sqlalchemy.dialects import postgresql

from orders_api.adapters.postgres.tables import idempotency_keys
from orders_api.idempotency import KEY_TTL, IdempotencyKey, IdempotencyKeyInFlightError

#: Reads of a key that was taken yet is gone a moment later (a concurrent expiry or purge
#: deleted it); each try claims it again, so this only bounds a pathological race.
_CLAIM_ATTEMPTS: Final = 3


class SqlAlchemyIdempotencyKeyRepository:
    """Keys stored in ``idempotency_keys``; never commits, the unit of work does."""

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection

    def claim(self, record: IdempotencyKey) -> IdempotencyKey:
        """Store ``record`` unless its key is taken; return the record that holds the key now.

        One ``INSERT … ON CONFLICT DO NOTHING`` on the primary key, never check-then-insert. If
        another transaction inserted the same key and has not ended, PostgreSQL makes this
        insert wait for it: when that one commits, this insert does nothing and its row is read
        back; when it rolls back, this insert goes ahead. The wait is bounded by the session's
        ``statement_timeout``.

        :raises IdempotencyKeyInFlightError: the other transaction outlasted the timeout.
        """
        with _in_flight_on_timeout(record.key):
            for _ in range(_CLAIM_ATTEMPTS):
                inserted = self._connection.execute(
                    postgresql.insert(idempotency_keys)
                    .values(
                        key=record.key,
                        request_fingerprint=record.request_fingerprint,
                        order_id=record.order_id,
                        created_at=record.created_at,
                    )
                    .on_conflict_do_nothing(index_elements=[idempotency_keys.c.key])
                    .returning(idempotency_keys.c.key)
                ).first()
                if inserted is not None:
                    return record
                holder = self._get(record.key)
                if holder is not None:
                    return holder
        raise IdempotencyKeyInFlightError(record.key)

    def remove(self, record: IdempotencyKey) -> None:
        """Delete ``record``, an expired key about to be claimed anew; a newer holder of the key stays.

        Waits, within ``statement_timeout``, for a concurrent transaction removing the same row.

        :raises IdempotencyKeyInFlightError: that transaction outlasted the timeout.
        """
        with _in_flight_on_timeout(record.key):
            self._connection.execute(
                sa.delete(idempotency_keys).where(
                    idempotency_keys.c.key == record.key, idempotency_keys.c.order_id == record.order_id
                )
            )

    def purge_expired(self, now: datetime) -> int:
        """Delete every key older than :data:`~orders_api.idempotency.KEY_TTL` at ``now``; return how many."""
        result = self._connection.execute(
            sa.delete(idempotency_keys).where(idempotency_keys.c.created_at < now - KEY_TTL)
        )
        return cast("sa.CursorResult[Any]", result).rowcount

    def _get(self, key: str) -> IdempotencyKey | None:
        row = (
            self._connection.execute(sa.select(idempotency_keys).where(idempotency_keys.c.key == key))
            .mappings()
            .one_or_none()
        )
        if row is None:
            return None
        return IdempotencyKey(
            key=row["key"],
            request_fingerprint=row["request_fingerprint"],
            order_id=row["order_id"],
            created_at=row["created_at"],
        )


@contextmanager
def _in_flight_on_timeout(key: str) -> Iterator[None]:
    """Turn a statement or lock timeout into :exc:`IdempotencyKeyInFlightError`.

    The statements inside wait only on another transaction holding the same key, so running
    out of time means that transaction is still in flight.
    """
    try:
        yield
    except sa.exc.OperationalError as error:
        if isinstance(error.orig, errors.QueryCanceled | errors.LockNotAvailable):
            raise IdempotencyKeyInFlightError(key) from error
        raise
