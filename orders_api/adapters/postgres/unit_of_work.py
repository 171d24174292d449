"""The unit of work on PostgreSQL: a connection of its own per use case, and its repositories."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Final, Self

import sqlalchemy as sa

from orders_api.adapters.postgres.commit_outcome import (
    BEFORE_COMMIT,
    CommitOutcomeUnknownError,
    LostCommit,
    committed,
)
from orders_api.adapters.postgres.idempotency_keys import SqlAlchemyIdempotencyKeyRepository
from orders_api.adapters.postgres.repository import SqlAlchemyOrderRepository
from orders_api.service_layer.unit_of_work import DatabaseInRecoveryError, OutcomeUnknownObserver
from orders_api.timeout_rules import COMMIT_OUTCOME_WAIT_S

logger = logging.getLogger(__name__)

#: Writes WAL under a transaction id and changes nothing else: a transactional logical-decoding
#: message, which no consumer reads, takes no lock, and leaves no row behind. (An xid alone,
#: ``pg_current_xact_id()``, writes no WAL, and its commit does not wait for the standby.)
_DURABILITY_BARRIER: Final = sa.text("SELECT pg_logical_emit_message(true, 'orders', 'durability barrier')")
_IN_RECOVERY: Final = sa.text("SELECT pg_is_in_recovery()")


class SqlAlchemyUnitOfWork:
    """A unit of work over a connection of its own from the engine's pool, never shared between threads.

    A SQLAlchemy Core ``Connection``, not an ORM ``Session``: the repositories run prebuilt Core
    statements and map rows to domain objects themselves, so a session would add its identity
    map, state tracking and bind resolution to every request and placement and use none of it
    (docs/benchmarks.md).
    """

    orders: SqlAlchemyOrderRepository
    idempotency_keys: SqlAlchemyIdempotencyKeyRepository

    def __init__(
        self,
        engine: sa.Engine,
        *,
        on_outcome_unknown: OutcomeUnknownObserver | None = None,
        outcome_wait_s: float = COMMIT_OUTCOME_WAIT_S,
    ) -> None:
        """Work on ``engine``; ``outcome_wait_s`` bounds the lookup of a COMMIT whose reply was lost.

        ``on_outcome_unknown``, if given, is told the orders of each COMMIT of unknown outcome.
        """
        self._engine = engine
        self._on_outcome_unknown = on_outcome_unknown
        self._outcome_wait_s = outcome_wait_s

    def __enter__(self) -> Self:
        self._connection = self._engine.connect()
        self.orders = SqlAlchemyOrderRepository(self._connection)
        self.idempotency_keys = SqlAlchemyIdempotencyKeyRepository(self._connection)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._connection.close()  # rolls back whatever was not committed

    def confirm_durable(self) -> None:
        """See :meth:`UnitOfWork.confirm_durable`: commit a transaction that wrote WAL of its own.

        Its commit record follows, in the WAL, every commit this transaction could see, and a
        writing commit waits for the synchronous standby to hold the WAL up to its record.

        :raises DatabaseInRecoveryError: the server is a standby still replaying the primary's
            WAL (a failover's new primary before its promotion): what was read may be behind.
        """
        if self._connection.execute(_IN_RECOVERY).scalar_one():
            raise DatabaseInRecoveryError("the database is a standby in recovery; waiting for a primary")
        self._connection.execute(_DURABILITY_BARRIER)
        self.commit()

    def commit(self) -> None:
        """Commit, and if the connection is lost on the way, learn whether the commit happened.

        A COMMIT cut off (the server restarted, froze, failed over, or the network failed) may or
        may not have taken effect; answering a client ``500`` for an order that was in fact
        committed would break the promise that a ``500`` means "not placed", and answering
        ``201`` for one committed on the primary alone would break it at the next failover. So
        after a lost connection the outcome is looked up on fresh connections
        (:mod:`orders_api.adapters.postgres.commit_outcome`): a commit whose orders exist and are
        replicated returns normally.

        :raises sqlalchemy.exc.DBAPIError: the commit did not happen.
        :raises CommitOutcomeUnknownError: its outcome could not be learnt in time; logged at
            ``ERROR`` with its orders, which may or may not be committed.
        """
        dbapi_connection = self._connection.connection.dbapi_connection
        if dbapi_connection.autocommit:  # type: ignore[union-attr]
            self._connection.commit()  # every statement committed on its own: nothing pending
            return
        backend_pid: int = dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        xid = self._connection.execute(BEFORE_COMMIT).scalar_one()
        try:
            self._connection.commit()
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated or xid is None:
                raise  # not lost, or nothing written that could be lost
            lost = LostCommit(backend_pid, xid, tuple(self.orders.created))
            logger.warning("connection lost during COMMIT of transaction %s; looking up its outcome", xid)
            try:
                happened = committed(self._engine, lost, wait_s=self._outcome_wait_s)
            except CommitOutcomeUnknownError as unknown:
                logger.error(
                    "COMMIT outcome unknown for orders %s (answered as failed, may be committed): %s",
                    " ".join(str(order_id) for order_id in lost.order_ids) or "(none)",
                    unknown,
                )
                if self._on_outcome_unknown is not None and lost.order_ids:
                    self._on_outcome_unknown(lost.order_ids)
                raise unknown from error
            if not happened:
                raise
            logger.warning("transaction %s was committed after all, and is replicated", xid)
