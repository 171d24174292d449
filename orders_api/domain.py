"""The order and the rules of its life cycle, free of any framework.

An order is created ``pending``. A worker claims it for a lease before calling the exchange, so
that a second delivery of the same message cannot call the exchange while the first is still in
flight; the claim ends with ``placed``, with a release for a retry, or with ``failed`` when
retrying cannot help. The holder renews the lease for as long as it lives, so a claim expires
only once its holder has stopped renewing it: it died, or it lost the database, in which case
the claimer must have seen the database for a whole lease to tell the two apart.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from orders_api.executions import ExecutionState

#: Claims in a row that may end without an outcome (worker killed mid-placement) before the
#: order counts as poison. A deploy or crash abandons a claim now and then; three in a row on
#: the same order point at the order.
MAX_ABANDONED_CLAIMS = 3


class OrderType(enum.StrEnum):
    """How the exchange should price the order."""

    MARKET = "market"
    LIMIT = "limit"


class Side(enum.StrEnum):
    """Whether the client buys or sells."""

    BUY = "buy"
    SELL = "sell"


class OrderStatus(enum.StrEnum):
    """Where the order stands with the exchange."""

    PENDING = "pending"
    PLACED = "placed"
    FAILED = "failed"


class ClaimHeldError(Exception):
    """Another delivery holds a live claim on the order; try again once its lease may have ended."""

    def __init__(self, order_id: uuid.UUID, retry_after: timedelta) -> None:
        super().__init__(f"order {order_id} is claimed by another delivery for {retry_after}")
        self.retry_after = retry_after


class PoisonOrderError(Exception):
    """Placing this order has been cut short too often in a row: it likely kills its worker.

    Retrying such an order would only take worker after worker down with it; it fails instead,
    and its message goes to the dead-letter queue for an operator.
    """


class OrderSettledError(Exception):
    """The order is already placed or failed: a later delivery of its message has nothing to do."""


@dataclass(frozen=True)
class Order:
    """An order as the client sent it, plus what the service has learned about its placement."""

    id: uuid.UUID
    created_at: datetime
    type: OrderType
    side: Side
    instrument: str
    limit_price: Decimal | None
    quantity: int
    status: OrderStatus = OrderStatus.PENDING
    placed_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    claimed_until: datetime | None = None
    #: Claims in a row whose lease ran out with no outcome recorded: their worker died mid-placement.
    abandoned_claims: int = 0
    #: The attempt (claim number) whose exchange call placed the order; ``None`` until placed.
    placed_attempt: int | None = None
    #: Other attempts whose exchange call placed the order too: each is one order placed twice
    #: on the exchange, which only a worker paused or killed inside the call can cause.
    duplicate_attempts: tuple[int, ...] = ()
    #: What the exchange's execution reports say so far; only the applier changes it
    #: (:mod:`orders_api.adapters.postgres.execution_ledger`).
    execution: ExecutionState = field(default_factory=ExecutionState)

    def claim(self, now: datetime, lease: timedelta, *, takeover_delay: timedelta = timedelta(0)) -> Order:
        """Return the order claimed for one call to the exchange, for ``lease`` unless renewed.

        A claim still in place but expired was abandoned: its holder stopped renewing it, having
        died mid-placement. Taking it over counts towards :data:`MAX_ABANDONED_CLAIMS`. An
        expired claim can also mean the database was away, from the holder as from everyone,
        and the holder is about to renew it or record its outcome: ``takeover_delay`` is how long
        the claimer must still see the database before it can tell (zero once it has seen it
        for a whole lease), and no claim is taken over before then.

        :raises OrderSettledError: the order is no longer pending.
        :raises ClaimHeldError: another delivery's claim has not expired, or may not be taken
            over yet.
        :raises PoisonOrderError: too many claims in a row were abandoned.
        """
        if self.status is not OrderStatus.PENDING:
            raise OrderSettledError(f"order {self.id} is already {self.status}")
        abandoned = self.abandoned_claims
        if self.claimed_until is not None:
            if self.claimed_until > now:
                raise ClaimHeldError(self.id, self.claimed_until - now)
            if takeover_delay > timedelta(0):
                raise ClaimHeldError(self.id, takeover_delay)
            abandoned += 1
        if abandoned >= MAX_ABANDONED_CLAIMS:
            raise PoisonOrderError(f"placing order {self.id} was cut short {abandoned} times in a row")
        return replace(
            self, attempts=self.attempts + 1, claimed_until=now + lease, abandoned_claims=abandoned
        )

    def placed(self, now: datetime, attempt: int) -> Order:
        """Return the order as placed on the exchange at ``now`` by the call of attempt ``attempt``.

        The exchange's acceptance is a fact whatever the order's stored state says, so this
        applies even over another delivery's claim; an order placed before keeps its first time.
        An order another attempt placed already was placed twice: ``attempt`` joins
        :attr:`duplicate_attempts` (once, however often it is recorded).
        """
        if self.status is OrderStatus.PLACED:
            if self.placed_attempt in (None, attempt) or attempt in self.duplicate_attempts:
                return self
            return replace(self, duplicate_attempts=(*self.duplicate_attempts, attempt))
        return replace(
            self,
            status=OrderStatus.PLACED,
            placed_at=now,
            placed_attempt=attempt,
            claimed_until=None,
            last_error=None,
            abandoned_claims=0,
        )

    def released(self, attempt: int, error: str) -> Order:
        """Return the order with the claim of attempt number ``attempt`` released after a failed call.

        Each claim is a new attempt, so the attempt number names the claim (its lease changes
        with every renewal). A claim that has since been taken over is not ours to release: the
        order is returned unchanged, so a late failure cannot undo another delivery's work.
        """
        if self.status is not OrderStatus.PENDING or self.claimed_until is None or self.attempts != attempt:
            return self
        return replace(self, claimed_until=None, last_error=error, abandoned_claims=0)

    def failed(self, error: str, now: datetime) -> Order:
        """Return the order as failed for good; only a pending order can fail.

        :raises ClaimHeldError: another delivery holds a live claim: it is placing the order
            right now, and its outcome decides; whoever wanted to fail the order retries later.
        """
        if self.status is not OrderStatus.PENDING:
            return self
        if self.claimed_until is not None and self.claimed_until > now:
            raise ClaimHeldError(self.id, self.claimed_until - now)
        return replace(self, status=OrderStatus.FAILED, claimed_until=None, last_error=error)

    def reopened(self) -> Order:
        """Return a failed order pending again, for an operator replaying its dead-lettered message.

        ``attempts`` and ``last_error`` stay as the record of what went wrong; the count of
        abandoned claims starts afresh, as the replayed message's retries do. An order that is
        not failed is returned unchanged: a pending one needs no reopening, a placed one must
        never be placed again.
        """
        if self.status is not OrderStatus.FAILED:
            return self
        return replace(self, status=OrderStatus.PENDING, claimed_until=None, abandoned_claims=0)
