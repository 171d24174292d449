"""In-memory stand-ins for the service layer's ports, so unit tests need no database or broker.

The fakes model what the use cases rely on rather than merely recording calls: the unit of work
keeps a committed store apart from the changes staged in the open transaction and throws the
staged changes away on leaving without a commit, so a test can tell committed state from work
that was rolled back. Every fake appends to a shared ``events`` list, so tests can check the
order in which a use case does things (for instance, that it commits only after the placement
request succeeded).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Self

from orders_api.domain import Order, OrderStatus, OrderType, Side
from orders_api.executions import ExecutionReport
from orders_api.idempotency import IdempotencyKey, IdempotencyKeyInFlightError
from orders_api.listing import OrderListing
from orders_api.service_layer.claims import RENEWALS_PER_LEASE, ClaimKeeper

#: A fixed moment for tests that need a clock; timezone-aware, as every timestamp of the service is.
T0 = datetime(2024, 1, 2, 9, 30, tzinfo=UTC)


def make_order(
    *,
    order_id: uuid.UUID | None = None,
    created_at: datetime = T0,
    type: OrderType = OrderType.LIMIT,
    side: Side = Side.BUY,
    instrument: str = "US0378331005",
    limit_price: Decimal | None = Decimal("150.50"),
    quantity: int = 10,
    status: OrderStatus = OrderStatus.PENDING,
    placed_at: datetime | None = None,
    attempts: int = 0,
    last_error: str | None = None,
    claimed_until: datetime | None = None,
    abandoned_claims: int = 0,
) -> Order:
    """An order with every field filled, so a test names only the fields it is about."""
    return Order(
        id=uuid.uuid4() if order_id is None else order_id,
        created_at=created_at,
        type=type,
        side=side,
        instrument=instrument,
        limit_price=limit_price,
        quantity=quantity,
        status=status,
        placed_at=placed_at,
        attempts=attempts,
        last_error=last_error,
        claimed_until=claimed_until,
        abandoned_claims=abandoned_claims,
    )


class FakeOrderRepository:
    """Orders in a dict, keyed by id, behaving like the SQL repository where the use cases can tell.

    ``add`` refuses a duplicate id as the primary key would; ``update`` writes back only the
    fields the SQL ``UPDATE`` writes, and changes nothing for an id it does not hold.
    """

    def __init__(self, orders: Iterable[Order] = (), *, events: list[str] | None = None) -> None:
        self.rows: dict[uuid.UUID, Order] = {order.id: order for order in orders}
        #: The database's clock, on which claims are written and judged; a test sets its fake.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.events: list[str] = [] if events is None else events
        #: Ids passed to :meth:`wait_for_creation`, in call order.
        self.waited_for: list[uuid.UUID] = []
        #: Ids loaded with ``for_update=True``, in call order.
        self.locked_for_update: list[uuid.UUID] = []
        #: Ids of orders untouched for longer than any sweep's threshold, for :meth:`lock_stale_pending`.
        self.stale: set[uuid.UUID] = set()
        #: Ids whose rows another transaction holds locked, which ``SKIP LOCKED`` passes over.
        self.locked_elsewhere: set[uuid.UUID] = set()
        #: Run once, then cleared, just before the next :meth:`compare_and_set` compares: what a
        #: concurrent writer does between a use case's read and its write.
        self.before_next_compare_and_set: Callable[[], None] | None = None
        #: Run once, then cleared, just before the next ``get(for_update=True)`` reads: what the
        #: transaction holding the row lock commits before the lock is granted.
        self.before_next_lock: Callable[[], None] | None = None

    def add(self, order: Order) -> None:
        """Store a new order; a second order with the same id is an error, as in PostgreSQL."""
        self.events.append("add")
        if order.id in self.rows:
            raise KeyError(f"duplicate order id {order.id}")
        self.rows[order.id] = order

    def add_many(self, batch: Sequence[Order]) -> None:
        """Store new orders as :meth:`add` stores each, recorded as one event."""
        self.events.append("add_many")
        for order in batch:
            if order.id in self.rows:
                raise KeyError(f"duplicate order id {order.id}")
            self.rows[order.id] = order

    def wait_for_creation(self, order_id: uuid.UUID) -> None:
        """Record the wait; with no concurrent transactions in memory there is nothing to wait for."""
        self.events.append("wait_for_creation")
        self.waited_for.append(order_id)

    def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """The order as this transaction sees it, or ``None``."""
        self.events.append("get for update" if for_update else "get")
        if for_update:
            self.locked_for_update.append(order_id)
            holder, self.before_next_lock = self.before_next_lock, None
            if holder is not None:
                holder()
        return self.rows.get(order_id)

    def get_with_clock(self, order_id: uuid.UUID) -> tuple[Order | None, datetime]:
        """The order as :meth:`get` reads it, and :attr:`clock`'s time."""
        return self.get(order_id), self.clock()

    def database_now(self) -> datetime:
        """:attr:`clock`'s time."""
        return self.clock()

    def executions_of(self, order_id: uuid.UUID) -> list[ExecutionReport]:
        """No reports: the in-memory orders never hear from the exchange."""
        return []

    def list_page(self, listing: OrderListing) -> list[Order]:
        """Every order newest first, up to the listing's limit (its filters are the SQL's to test)."""
        ordered = sorted(self.rows.values(), key=lambda order: (order.created_at, order.id), reverse=True)
        return ordered[: listing.limit]

    def lock_stale_pending(self, untouched_for: timedelta, *, limit: int) -> list[Order]:
        """The pending, unclaimed orders among :attr:`stale`, minus :attr:`locked_elsewhere`, up to ``limit``.

        There is no clock here: a test names the stale orders, and :meth:`update` makes an order
        fresh again, as touching ``updated_at`` does (a rollback does not make it stale again).
        """
        self.events.append("lock_stale_pending")
        found = [
            order
            for order_id in sorted(self.stale - self.locked_elsewhere)
            if (order := self.rows.get(order_id)) is not None
            and order.status is OrderStatus.PENDING
            and order.claimed_until is None
        ]
        return found[:limit]

    def compare_and_set(self, seen: Order, changed: Order) -> bool:
        """Write ``changed`` as :meth:`update` does, but only while the stored order equals ``seen``."""
        self.events.append("compare_and_set")
        interleaved, self.before_next_compare_and_set = self.before_next_compare_and_set, None
        if interleaved is not None:
            interleaved()
        if self.rows.get(seen.id) != seen:
            return False
        self._write(changed)
        return True

    def renew_claims(self, held: Mapping[uuid.UUID, int], lease: timedelta) -> int:
        """Extend the open claims among ``held`` by ``lease`` from :attr:`clock`'s now, as SQL does."""
        until = self.clock() + lease
        self.events.append("renew_claims")
        renewed = 0
        for order_id, attempt in held.items():
            order = self.rows.get(order_id)
            if (
                order is not None
                and order.status is OrderStatus.PENDING
                and order.claimed_until is not None
                and order.attempts == attempt
            ):
                self._write(replace(order, claimed_until=until))
                renewed += 1
        return renewed

    def update(self, order: Order) -> None:
        """Write back status, placement time, attempts, last error and claim, like the SQL repository."""
        self.events.append("update")
        self._write(order)

    def _write(self, order: Order) -> None:
        stored = self.rows.get(order.id)
        if stored is None:
            return
        self.stale.discard(order.id)
        self.rows[order.id] = Order(
            id=stored.id,
            created_at=stored.created_at,
            type=stored.type,
            side=stored.side,
            instrument=stored.instrument,
            limit_price=stored.limit_price,
            quantity=stored.quantity,
            status=order.status,
            placed_at=order.placed_at,
            attempts=order.attempts,
            last_error=order.last_error,
            claimed_until=order.claimed_until,
            abandoned_claims=order.abandoned_claims,
            placed_attempt=order.placed_attempt,
            duplicate_attempts=order.duplicate_attempts,
        )


class FakeIdempotencyKeyRepository:
    """Used idempotency keys in a dict, keyed by key, claimed first come first served like the SQL table.

    Memory has no concurrent transactions to wait for: a key in :attr:`in_flight` stands for one
    that another request holds for longer than the wait may last, so claiming it raises.
    """

    def __init__(self, *, events: list[str] | None = None) -> None:
        self.rows: dict[str, IdempotencyKey] = {}
        self.events: list[str] = [] if events is None else events
        #: Keys held by a transaction that does not end in time.
        self.in_flight: set[str] = set()

    def claim(self, record: IdempotencyKey) -> IdempotencyKey:
        """Store ``record`` unless its key is taken; return the record holding the key."""
        self.events.append("claim key")
        if record.key in self.in_flight:
            raise IdempotencyKeyInFlightError(record.key)
        return self.rows.setdefault(record.key, record)

    def remove(self, record: IdempotencyKey) -> None:
        """Delete ``record``, and not a newer holder of its key, as the SQL ``DELETE`` does."""
        self.events.append("remove key")
        stored = self.rows.get(record.key)
        if stored is not None and stored.order_id == record.order_id:
            del self.rows[record.key]

    def purge_expired(self, now: datetime) -> int:
        """Delete the keys expired at ``now``; return how many."""
        self.events.append("purge keys")
        expired = [key for key, record in self.rows.items() if record.expired(now)]
        for key in expired:
            del self.rows[key]
        return len(expired)


class FakeUnitOfWork:
    """A transaction over an in-memory store that really commits and really rolls back.

    Entering stages a copy of the committed orders and idempotency keys; :meth:`commit` makes
    the staged ones the committed ones; leaving discards whatever was staged since the last
    commit. Tests read :attr:`committed` to see what a use case made durable. Nesting, and touching ``orders``
    outside a transaction, are errors, since the SQL unit of work cannot do either safely.
    """

    def __init__(self, *orders: Order, events: list[str] | None = None) -> None:
        self.events: list[str] = [] if events is None else events
        #: The durable state: what a later transaction, or another process, would see.
        self.committed: dict[uuid.UUID, Order] = {order.id: order for order in orders}
        #: The one repository, whose rows are reset to the committed state on entering and leaving.
        self.repository = FakeOrderRepository(events=self.events)
        #: The durable idempotency keys, beside the orders.
        self.committed_keys: dict[str, IdempotencyKey] = {}
        #: The one key repository, reset to :attr:`committed_keys` like :attr:`repository`.
        self.key_repository = FakeIdempotencyKeyRepository(events=self.events)
        #: Successful commits so far.
        self.commits = 0
        #: Transactions left with uncommitted changes, which were thrown away.
        self.rollbacks = 0
        #: When set, :meth:`commit` raises this instead of committing.
        self.fail_commit_with: Exception | None = None
        self._in_transaction = False

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open right now."""
        return self._in_transaction

    @property
    def orders(self) -> FakeOrderRepository:
        """The orders as the open transaction sees them."""
        if not self._in_transaction:
            raise RuntimeError("orders used outside a transaction")
        return self.repository

    @property
    def idempotency_keys(self) -> FakeIdempotencyKeyRepository:
        """The idempotency keys as the open transaction sees them."""
        if not self._in_transaction:
            raise RuntimeError("idempotency keys used outside a transaction")
        return self.key_repository

    def __enter__(self) -> Self:
        """Begin a transaction on a copy of the committed orders."""
        if self._in_transaction:
            raise RuntimeError("nested transaction on one unit of work")
        self._in_transaction = True
        self.repository.rows = dict(self.committed)
        self.key_repository.rows = dict(self.committed_keys)
        self.events.append("begin")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """End the transaction, discarding what was not committed."""
        if self.repository.rows != self.committed or self.key_repository.rows != self.committed_keys:
            self.rollbacks += 1
            self.events.append("rollback")
        self.repository.rows = dict(self.committed)
        self.key_repository.rows = dict(self.committed_keys)
        self._in_transaction = False
        self.events.append("end")

    def commit(self) -> None:
        """Make the staged orders durable, or raise :attr:`fail_commit_with` and keep the old state."""
        if not self._in_transaction:
            raise RuntimeError("commit outside a transaction")
        if self.fail_commit_with is not None:
            self.events.append("commit failed")
            raise self.fail_commit_with
        self.committed = dict(self.repository.rows)
        self.committed_keys = dict(self.key_repository.rows)
        self.commits += 1
        self.events.append("commit")

    def confirm_durable(self) -> None:
        """Commit behind a durability barrier, recorded in :attr:`events` before the commit."""
        self.events.append("durability barrier")
        self.commit()


class FakePlacementRequests:
    """The broker as the API sees it: records each durable request, or raises when told to."""

    def __init__(self, *, events: list[str] | None = None, fail_with: Exception | None = None) -> None:
        self.events: list[str] = [] if events is None else events
        self.fail_with = fail_with
        #: Ids whose placement was durably requested, in order.
        self.requested: list[uuid.UUID] = []

    def request_placement(self, order_id: uuid.UUID) -> None:
        """Record the request, or raise :attr:`fail_with` without recording it."""
        self.events.append("request_placement")
        if self.fail_with is not None:
            raise self.fail_with
        self.requested.append(order_id)

    def request_placements(self, order_ids: Sequence[uuid.UUID]) -> None:
        """Record the requests as one event, or raise :attr:`fail_with` without recording any."""
        self.events.append("request_placements")
        if self.fail_with is not None:
            raise self.fail_with
        self.requested.extend(order_ids)


class FakeExchange:
    """The stock exchange as the workers see it: records every order it is given.

    It raises the queued ``failures`` one per call before it starts succeeding, and can run a
    ``during_call`` hook while a call is in flight, to simulate what happens meanwhile (a second
    delivery of the same message, the clock moving on).
    """

    def __init__(
        self,
        *,
        failures: Iterable[Exception] = (),
        during_call: Callable[[Order], None] | None = None,
        events: list[str] | None = None,
    ) -> None:
        self.failures: list[Exception] = list(failures)
        self.during_call = during_call
        self.events: list[str] = [] if events is None else events
        #: Every order the exchange was called with, in call order, failed calls included.
        self.orders: list[Order] = []

    def __call__(self, order: Order) -> None:
        """Take the order, or raise the next queued failure."""
        self.events.append("exchange")
        self.orders.append(order)
        if self.during_call is not None:
            self.during_call(order)
        if self.failures:
            raise self.failures.pop(0)


class FakeClock:
    """A clock that stands still until a test moves it, so leases expire exactly when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def __call__(self) -> datetime:
        """The current fake time."""
        return self.current

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.current += delta


def seasoned_claims(clock: FakeClock, lease: timedelta) -> ClaimKeeper:
    """The claims of a process that has reached the database without a gap for a whole lease, up to now.

    Such a process may take over an expired claim. Its renewals go to a store of their own, so
    they add nothing to what a test inspects.
    """
    claims = ClaimKeeper(FakeUnitOfWork, lease, now=clock)
    now = clock.current
    for step in range(RENEWALS_PER_LEASE + 1):
        clock.current = now - lease + step * claims.renew_every
        claims.renew()
    clock.current = now
    return claims
