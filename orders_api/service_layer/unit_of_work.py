"""The ports of the use cases' storage: one transaction per use case, and the repositories within it.

The SQL implementation is :class:`orders_api.adapters.postgres.unit_of_work.SqlAlchemyUnitOfWork`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from orders_api.domain import Order
from orders_api.executions import ExecutionReport
from orders_api.idempotency import IdempotencyKey
from orders_api.listing import OrderListing


class DatabaseInRecoveryError(Exception):
    """The server is a standby still in recovery, which may not show every commit yet.

    It takes no writes either; nothing can be decided on it, and waiting for its promotion fixes it.
    """


#: Told the orders of a COMMIT whose outcome could not be learnt (for a metric).
OutcomeUnknownObserver = Callable[[Sequence[uuid.UUID]], None]


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

    def get_with_clock(self, order_id: uuid.UUID) -> tuple[Order | None, datetime]:
        """Load an order (``None`` when never committed) and the database's time of the read."""

    def database_now(self) -> datetime:
        """The database's clock, on which every claim is written and judged."""

    def update(self, order: Order) -> None:
        """Persist the changeable fields of ``order``."""

    def executions_of(self, order_id: uuid.UUID) -> list[ExecutionReport]:
        """The execution reports applied to ``order_id``, by ``seq``."""

    def list_page(self, listing: OrderListing) -> list[Order]:
        """One page of orders, newest first, as ``listing`` asks."""

    def compare_and_set(self, seen: Order, changed: Order) -> bool:
        """Persist ``changed`` only if the stored order still equals ``seen``; return whether it did."""

    def renew_claims(self, held: Mapping[uuid.UUID, int], lease: timedelta) -> int:
        """Extend by ``lease`` from the database's now the open claims among ``held``; return how many."""

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

    def confirm_durable(self) -> None:
        """Commit, returning only once everything committed before is as durable as this commit.

        A commit is visible on the primary as soon as it is in the primary's WAL, while it still
        waits for the synchronous standby: a decision taken on what was read (nothing to do, the
        order is placed already) could then outlive what it was taken on, lost at a failover.
        Call this before acting on such a read.
        """
