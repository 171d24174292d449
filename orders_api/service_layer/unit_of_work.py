"""One database transaction per use case, owned by the service layer rather than the caller."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Protocol, Self

import sqlalchemy as sa

from orders_api.adapters.idempotency_keys import SqlAlchemyIdempotencyKeyRepository
from orders_api.adapters.repository import SqlAlchemyOrderRepository
from orders_api.domain import Order
from orders_api.executions import ExecutionReport
from orders_api.idempotency import IdempotencyKey
from orders_api.listing import OrderListing

logger = logging.getLogger(__name__)

#: Seconds a commit whose connection was lost waits, at most, to learn whether it happened.
#: Long enough for PostgreSQL to restart or fail over; the caller answers only once it knows.
COMMIT_OUTCOME_WAIT_S = 60.0
#: Seconds between two looks at a lost commit's transaction.
_COMMIT_OUTCOME_POLL_S = 0.5

_CURRENT_TRANSACTION: Final = sa.text("SELECT pg_current_xact_id()::text")
#: Ends the backend still running the lost transaction, if any, so that its outcome is final.
_END_LOST_TRANSACTION: Final = sa.text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_xid = xid(CAST(:xid AS xid8))"
)
_TRANSACTION_STATUS: Final = sa.text("SELECT pg_xact_status(CAST(:xid AS xid8))")


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

    def executions_of(self, order_id: uuid.UUID) -> list[ExecutionReport]:
        """The execution reports applied to ``order_id``, by ``seq``."""

    def list_page(self, listing: OrderListing) -> list[Order]:
        """One page of orders, newest first, as ``listing`` asks."""

    def compare_and_set(self, seen: Order, changed: Order) -> bool:
        """Persist ``changed`` only if the stored order still equals ``seen``; return whether it did."""

    def renew_claims(self, held: Mapping[uuid.UUID, int], until: datetime) -> int:
        """Extend to ``until`` the open claims among ``held`` (order id → attempt); return how many."""

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
        """Commit, and if the connection is lost on the way, learn whether the commit happened.

        A COMMIT cut off (the server restarted, froze, or the network failed) may or may not
        have taken effect; answering a client ``500`` for an order that was in fact committed
        would break the promise that a ``500`` means "not placed". So the transaction's id is
        read before committing, and after a lost connection its fate is looked up on a fresh
        one (:func:`transaction_committed`): a commit that happened returns normally.

        :raises sqlalchemy.exc.DBAPIError: the commit did not happen, or its outcome could not
            be learnt within :data:`COMMIT_OUTCOME_WAIT_S`.
        """
        if self._connection.connection.dbapi_connection.autocommit:  # type: ignore[union-attr]
            self._connection.commit()  # every statement committed on its own: nothing pending
            return
        xid = self._connection.execute(_CURRENT_TRANSACTION).scalar_one()
        try:
            self._connection.commit()
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
            logger.warning("connection lost during COMMIT of transaction %s; looking up its outcome", xid)
            if not transaction_committed(self._engine, xid, wait_s=COMMIT_OUTCOME_WAIT_S):
                raise
            logger.warning("transaction %s was committed after all", xid)


def transaction_committed(engine: sa.Engine, xid: str, *, wait_s: float) -> bool:
    """Whether transaction ``xid``, whose connection was lost during its COMMIT, committed.

    Its backend may still be running (a partition, or a frozen server that resumed): it is
    terminated, which makes the outcome final, then ``pg_xact_status`` tells it. Retried on
    fresh connections while the server is away, for up to ``wait_s``.

    :raises sqlalchemy.exc.DBAPIError: the server could not be reached in time.
    :raises RuntimeError: the transaction still ran after ``wait_s`` (its backend would not end).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with engine.connect() as probe:
                probe.execute(_END_LOST_TRANSACTION, {"xid": xid})
                status = probe.execute(_TRANSACTION_STATUS, {"xid": xid}).scalar_one()
        except sa.exc.DBAPIError:
            if time.monotonic() >= deadline:
                raise
        else:
            if status in ("committed", "aborted"):
                return bool(status == "committed")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"transaction {xid} is still {status!r} after {wait_s:g} s")
        time.sleep(_COMMIT_OUTCOME_POLL_S)
