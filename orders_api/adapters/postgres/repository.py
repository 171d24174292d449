"""Reads and writes orders in PostgreSQL within the caller's transaction.

The statements of the hot paths (accepting an order, claiming and recording a placement) are
built once, here, with bind parameters: SQLAlchemy then reuses their compiled form and cache
key, where building a statement per call cost more CPU than PostgreSQL spent running it
(docs/benchmarks.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from orders_api.adapters.postgres.tables import executions, orders
from orders_api.domain import Order, OrderStatus, OrderType, Side
from orders_api.executions import ExecutionKind, ExecutionReport, ExecutionState, ExecutionStatus
from orders_api.listing import ListPosition, OrderListing

#: Every column a new order is inserted with: those its domain object holds. ``updated_at`` takes
#: the database's clock, and the execution columns their defaults (no report has come yet).
_INSERTED: Final = tuple(
    column
    for column in orders.columns
    if column.name
    not in {"updated_at", "filled_quantity", "filled_notional", "execution_status", "execution_seq"}
)

#: Takes the order's creation lock and inserts it, in one round trip. PostgreSQL runs the
#: ``creation_lock`` CTE because the INSERT selects from it; the casts give the selected
#: parameters their columns' types.
_LOCK_AND_INSERT: Final = sa.insert(orders).from_select(
    [column.name for column in _INSERTED],
    sa.select(
        *(sa.cast(sa.bindparam(column.name, type_=column.type), column.type) for column in _INSERTED)
    ).select_from(
        sa.select(
            sa.func.pg_advisory_xact_lock(sa.bindparam("lock_key", type_=sa.BigInteger)).label("taken")
        ).cte("creation_lock")
    ),
)

_LOCK_KEYS: Final = (
    sa.func.unnest(sa.bindparam("lock_keys", type_=postgresql.ARRAY(sa.BigInteger)))
    .table_valued("lock_key")
    .render_derived()
)
#: Takes the creation lock of every order of a batch, in one round trip.
_LOCK_ALL: Final = sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEYS.c.lock_key))
#: Inserts a batch of orders; run with one parameter set per order, SQLAlchemy sends them as
#: one multi-row ``INSERT``.
_INSERT: Final = sa.insert(orders)

_WAIT_FOR_CREATION: Final = sa.select(
    sa.func.pg_advisory_xact_lock(sa.bindparam("lock_key", type_=sa.BigInteger))
)
_GET: Final = sa.select(orders).where(orders.c.id == sa.bindparam("order_id", type_=orders.c.id.type))
_GET_FOR_UPDATE: Final = _GET.with_for_update()
#: :data:`_GET` with the database's clock: claims are judged on one clock, never a worker's own.
_GET_WITH_CLOCK: Final = sa.select(orders, sa.func.now().label("database_now")).where(
    orders.c.id == sa.bindparam("order_id", type_=orders.c.id.type)
)
_DATABASE_NOW: Final = sa.select(sa.func.now())

#: The columns that change over an order's life; the others are fixed when it is created.
_CHANGEABLE: Final = tuple(
    orders.c[name]
    for name in (
        "status",
        "placed_at",
        "attempts",
        "last_error",
        "claimed_until",
        "abandoned_claims",
        "placed_attempt",
        "duplicate_attempts",
    )
)
_UPDATE: Final = (
    sa.update(orders)
    .where(orders.c.id == sa.bindparam("order_id", type_=orders.c.id.type))
    .values(
        {
            **{column: sa.bindparam(f"new_{column.name}", type_=column.type) for column in _CHANGEABLE},
            orders.c.updated_at: sa.func.now(),
        }
    )
)
#: :data:`_UPDATE` only while every changeable column still holds what the caller read.
_COMPARE_AND_SET: Final = _UPDATE.where(
    *(
        column.is_not_distinct_from(sa.bindparam(f"seen_{column.name}", type_=column.type))
        for column in _CHANGEABLE
    )
)

_HELD: Final = (
    sa.func.unnest(
        sa.bindparam("held_ids", type_=postgresql.ARRAY(postgresql.UUID(as_uuid=True))),
        sa.bindparam("held_attempts", type_=postgresql.ARRAY(sa.Integer)),
    )
    .table_valued("id", "attempts")
    .render_derived()
)
#: Extends the claims a worker process holds (order id and attempt) by a lease from the
#: database's now, in one statement. Only a claim still open (pending, claimed, same attempt) is
#: extended: one settled or taken over since is left alone, and one that ran out but that nobody
#: took over is still its holder's, since a taker would have made a new attempt. ``updated_at``
#: moves too, so the stale-order sweep leaves claimed orders alone.
_RENEW_CLAIMS: Final = (
    sa.update(orders)
    .where(
        orders.c.id == _HELD.c.id,
        orders.c.attempts == _HELD.c.attempts,
        orders.c.status == OrderStatus.PENDING.value,
        orders.c.claimed_until.is_not(None),
    )
    .values(
        {
            orders.c.claimed_until: sa.func.now() + sa.bindparam("lease", type_=sa.Interval),
            orders.c.updated_at: sa.func.now(),
        }
    )
)


_EXECUTIONS_OF: Final = (
    sa.select(executions)
    .where(executions.c.order_id == sa.bindparam("order_id", type_=executions.c.order_id.type))
    .order_by(executions.c.seq, executions.c.exec_id)
)


def creation_lock_key(order_id: uuid.UUID) -> int:
    """The advisory lock key under which an order is created, as a signed 64-bit integer.

    Two ids sharing a key only make their transactions wait for each other, which is harmless.
    """
    return int.from_bytes(order_id.bytes[:8], "big", signed=True)


class SqlAlchemyOrderRepository:
    """Orders stored in the ``orders`` table, read and written on the unit of work's connection.

    Never commits; the unit of work does.
    """

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection
        #: The ids of the orders inserted in this transaction: what proves, after a COMMIT whose
        #: reply was lost, that it happened (:mod:`orders_api.adapters.postgres.commit_outcome`).
        self.created: list[uuid.UUID] = []

    def add(self, order: Order) -> None:
        """Insert a new order and hold its creation lock until this transaction ends.

        A worker takes the same lock before reading the order, so it waits for this
        transaction's outcome instead of mistaking a not-yet-committed order for an orphan.
        """
        self._connection.execute(_LOCK_AND_INSERT, {**_row(order), "lock_key": creation_lock_key(order.id)})
        self.created.append(order.id)

    def add_many(self, batch: Sequence[Order]) -> None:
        """Insert new orders, holding each one's creation lock until this transaction ends.

        Two statements for the whole batch: the locks, then one multi-row ``INSERT``. Batches
        never share an order, and a worker holds at most one creation lock, so taking several
        cannot deadlock.
        """
        self._connection.execute(_LOCK_ALL, {"lock_keys": [creation_lock_key(order.id) for order in batch]})
        self._connection.execute(_INSERT, [_row(order) for order in batch])
        self.created.extend(order.id for order in batch)

    def wait_for_creation(self, order_id: uuid.UUID) -> None:
        """Block until the transaction that created ``order_id``, if any is open, has ended."""
        self._connection.execute(_WAIT_FOR_CREATION, {"lock_key": creation_lock_key(order_id)})

    def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """Load an order, locking its row until the transaction ends when ``for_update``."""
        query = _GET_FOR_UPDATE if for_update else _GET
        row = self._connection.execute(query, {"order_id": order_id}).mappings().one_or_none()
        return None if row is None else _order(row)

    def get_with_clock(self, order_id: uuid.UUID) -> tuple[Order | None, datetime]:
        """Load an order, and the database's time of the read, in one round trip."""
        row = self._connection.execute(_GET_WITH_CLOCK, {"order_id": order_id}).mappings().one_or_none()
        if row is None:
            return None, self.database_now()
        return _order(row), row["database_now"]

    def database_now(self) -> datetime:
        """The database's clock: the one every claim is written and judged with."""
        now: datetime = self._connection.execute(_DATABASE_NOW).scalar_one()
        return now

    def executions_of(self, order_id: uuid.UUID) -> list[ExecutionReport]:
        """The execution reports applied to ``order_id``, by ``seq``."""
        rows = self._connection.execute(_EXECUTIONS_OF, {"order_id": order_id}).mappings()
        return [
            ExecutionReport(
                exec_id=row["exec_id"],
                order_id=row["order_id"],
                seq=row["seq"],
                kind=ExecutionKind(row["kind"]),
                quantity=row["quantity"],
                price=row["price"],
                reported_at=row["reported_at"],
            )
            for row in rows
        ]

    def list_page(self, listing: OrderListing) -> list[Order]:
        """The orders of one page of ``listing``, newest first, on the ``(created_at, id)`` index.

        The position is compared as a row value, ``(created_at, id) < (:at, :id)``, which
        PostgreSQL answers with one range scan of the index, backwards.
        """
        query = (
            sa.select(orders).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(listing.limit)
        )
        if listing.status is not None:
            query = query.where(orders.c.status == listing.status.value)
        if listing.instrument is not None:
            query = query.where(orders.c.instrument == listing.instrument)
        if listing.created_after is not None:
            query = query.where(orders.c.created_at >= listing.created_after)
        if listing.created_before is not None:
            query = query.where(orders.c.created_at < listing.created_before)
        if listing.after is not None:
            query = query.where(_before(listing.after))
        return [_order(row) for row in self._connection.execute(query).mappings()]

    def lock_stale_pending(self, untouched_for: timedelta, *, limit: int) -> list[Order]:
        """Lock up to ``limit`` pending orders untouched for ``untouched_for`` and not under a live claim.

        Oldest first, by the database's clock, on the partial index over pending orders.
        ``SKIP LOCKED`` passes over rows another transaction holds (a concurrent sweep, or an
        operator's replay), so concurrent sweeps split the stale orders between them
        instead of republishing one twice, and neither waits for the other.
        """
        now = sa.func.now()
        query = (
            sa.select(orders)
            .where(
                orders.c.status == OrderStatus.PENDING.value,
                orders.c.updated_at < now - sa.literal(untouched_for, sa.Interval),
                sa.or_(orders.c.claimed_until.is_(None), orders.c.claimed_until < now),
            )
            .order_by(orders.c.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_order(row) for row in self._connection.execute(query).mappings()]

    def update(self, order: Order) -> None:
        """Write back what may change over an order's life: status, claim, attempts and errors."""
        self._connection.execute(_UPDATE, {"order_id": order.id, **_changeable(order, "new_")})

    def renew_claims(self, held: Mapping[uuid.UUID, int], lease: timedelta) -> int:
        """Extend by ``lease`` from the database's now the open claims among ``held`` (order id → attempt).

        Return how many were extended. Also a round trip when ``held`` is empty, which is how
        its caller learns that the database answers.
        """
        result = self._connection.execute(
            _RENEW_CLAIMS,
            {"held_ids": list(held), "held_attempts": list(held.values()), "lease": lease},
        )
        return int(result.rowcount)

    def compare_and_set(self, seen: Order, changed: Order) -> bool:
        """Write ``changed`` only if the stored order still is ``seen``; return whether it was written.

        One statement and no row lock held between reading and writing: a concurrent writer's
        change makes the condition false and this call return ``False``, and the caller reads
        again. The change was computed from ``seen``, so writing it over an equal row is the
        same as computing it from that row.
        """
        result = self._connection.execute(
            _COMPARE_AND_SET,
            {"order_id": seen.id, **_changeable(changed, "new_"), **_changeable(seen, "seen_")},
        )
        return bool(result.rowcount == 1)


def _changeable(order: Order, prefix: str) -> dict[str, Any]:
    """The changeable columns' values of ``order``, as bind parameters named ``<prefix><column>``."""
    return {
        f"{prefix}status": order.status.value,
        f"{prefix}placed_at": order.placed_at,
        f"{prefix}attempts": order.attempts,
        f"{prefix}last_error": order.last_error,
        f"{prefix}claimed_until": order.claimed_until,
        f"{prefix}abandoned_claims": order.abandoned_claims,
        f"{prefix}placed_attempt": order.placed_attempt,
        f"{prefix}duplicate_attempts": list(order.duplicate_attempts),
    }


def _row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "created_at": order.created_at,
        "type": order.type.value,
        "side": order.side.value,
        "instrument": order.instrument,
        "limit_price": order.limit_price,
        "quantity": order.quantity,
        "status": order.status.value,
        "placed_at": order.placed_at,
        "attempts": order.attempts,
        "last_error": order.last_error,
        "claimed_until": order.claimed_until,
        "abandoned_claims": order.abandoned_claims,
        "placed_attempt": order.placed_attempt,
        "duplicate_attempts": list(order.duplicate_attempts),
    }


def _order(row: sa.RowMapping) -> Order:
    return Order(
        id=row["id"],
        created_at=row["created_at"],
        type=OrderType(row["type"]),
        side=Side(row["side"]),
        instrument=row["instrument"],
        limit_price=row["limit_price"],
        quantity=row["quantity"],
        status=OrderStatus(row["status"]),
        placed_at=row["placed_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        claimed_until=row["claimed_until"],
        abandoned_claims=row["abandoned_claims"],
        placed_attempt=row["placed_attempt"],
        duplicate_attempts=tuple(row["duplicate_attempts"]),
        execution=ExecutionState(
            filled_quantity=row["filled_quantity"],
            filled_notional=row["filled_notional"],
            status=None if row["execution_status"] is None else ExecutionStatus(row["execution_status"]),
            seq=row["execution_seq"],
        ),
    )


def _before(position: ListPosition) -> sa.ColumnElement[bool]:
    """Orders older than ``position`` in the list's order, ``(created_at, id)`` descending."""
    return sa.tuple_(orders.c.created_at, orders.c.id) < sa.tuple_(
        sa.literal(position.created_at, orders.c.created_at.type), sa.literal(position.id, orders.c.id.type)
    )
