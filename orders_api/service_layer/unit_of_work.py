"""One database transaction per use case, owned by the service layer rather than the caller."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

import sqlalchemy as sa

from orders_api.adapters.idempotency_keys import SqlAlchemyIdempotencyKeyRepository
from orders_api.adapters.repository import SqlAlchemyOrderRepository
from orders_api.domain import Order
from orders_api.idempotency import IdempotencyKey


class OrderRepository(Protocol):
    """What the use cases need from order storage."""

    def add(self, order: Order) -> None:
        """Store a new order and keep its creation lock until the transaction ends."""

    def add_many(self, batch: Sequence[Order]) -> None:
        """Store new orders and keep each one's creation lock until the transaction ends."""

    def wait_for_creation(self, order_id: uuid.UUID) -> None:
        """Wait until the transaction creating ``order_id`` has ended."""

    def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """Load an order, or ``None`` when it was never committed."""

    def update(self, order: Order) -> None:
        """Persist the changeable fields of ``order``."""

    def compare_and_set(self, seen: Order, changed: Order) -> bool:
        """Persist ``changed`` only if the stored order still equals ``seen``; return whether it did."""

    def lock_stale_pending(self, untouched_for: timedelta, *, limit: int) -> list[Order]:
        """Lock up to ``limit`` pending orders untouched for ``untouched_for``, with no live claim.

        Rows locked by another transaction are skipped, not waited for.
        """


class IdempotencyKeyRepository(Protocol):
    """What the use cases need from the store of used idempotency keys."""

    def claim(self, record: IdempotencyKey) -> IdempotencyKey:
        """Store ``record`` unless its key is taken, atomically; return the record holding the key.

        Waits for a concurrent transaction holding the same key to end, and raises
        :exc:`~orders_api.idempotency.IdempotencyKeyInFlightError` if it does not end in time.
        """

    def remove(self, record: IdempotencyKey) -> None:
        """Delete ``record`` (an expired key) so that its key can be claimed anew."""

    def purge_expired(self, now: datetime) -> int:
        """Delete every key expired at ``now``; return how many."""


class UnitOfWork(Protocol):
    """A transaction: work is rolled back unless :meth:`commit` is called before leaving."""

    @property
    def orders(self) -> OrderRepository:
        """The orders, read and written within this transaction."""

    @property
    def idempotency_keys(self) -> IdempotencyKeyRepository:
        """The used idempotency keys, within this transaction."""

    def __enter__(self) -> Self:
        """Begin the transaction."""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Roll back whatever was not committed and release the connection."""

    def commit(self) -> None:
        """Commit the transaction."""


class SqlAlchemyUnitOfWork:
    """A unit of work over a connection of its own from the engine's pool, never shared between threads.

    A SQLAlchemy Core ``Connection``, not an ORM ``Session``: the repositories run prebuilt Core
    statements and map rows to domain objects themselves, so a session would add its identity
    map, state tracking and bind resolution to every request and placement and use none of it
    (docs/benchmarks.md).
    """

    orders: SqlAlchemyOrderRepository
    idempotency_keys: SqlAlchemyIdempotencyKeyRepository

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def __enter__(self) -> Self:
        self._connection = self._engine.connect()
        self.orders = SqlAlchemyOrderRepository(self._connection)
        self.idempotency_keys = SqlAlchemyIdempotencyKeyRepository(self._connection)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._connection.close()  # rolls back whatever was not committed

    def commit(self) -> None:
        """Commit; raises if PostgreSQL did not confirm it, in which case the outcome may be unknown."""
        self._connection.commit()
