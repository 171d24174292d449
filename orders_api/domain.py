"""The order and the rules of its life cycle, free of any framework.

An order is created ``pending``. A worker claims it for a bounded lease before calling the
exchange, so that a second delivery of the same message cannot call the exchange while the
first is still in flight; the claim ends with ``placed``, with a release for a retry, or with
``failed`` when retrying cannot help.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal


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

    def claim(self, now: datetime, lease: timedelta) -> Order:
        """Return the order claimed for one call to the exchange, lasting at most ``lease``.

        :raises OrderSettledError: the order is no longer pending.
        :raises ClaimHeldError: another delivery's claim has not yet expired.
        """
        if self.status is not OrderStatus.PENDING:
            raise OrderSettledError(f"order {self.id} is already {self.status}")
        if self.claimed_until is not None and self.claimed_until > now:
            raise ClaimHeldError(self.id, self.claimed_until - now)
        return replace(self, attempts=self.attempts + 1, claimed_until=now + lease)

    def placed(self, now: datetime) -> Order:
        """Return the order as placed on the exchange at ``now``.

        The exchange's acceptance is a fact whatever the order's stored state says, so this
        applies even over another delivery's claim; an order placed before keeps its first time.
        """
        if self.status is OrderStatus.PLACED:
            return self
        return replace(self, status=OrderStatus.PLACED, placed_at=now, claimed_until=None, last_error=None)

    def released(self, claim: datetime | None, error: str) -> Order:
        """Return the order with the claim that ended at ``claim`` released after a failed call.

        A claim that has since been taken over (its lease ran out) is not ours to release: the
        order is returned unchanged, so a late failure cannot undo another delivery's work.
        """
        if self.status is not OrderStatus.PENDING or self.claimed_until != claim:
            return self
        return replace(self, claimed_until=None, last_error=error)

    def failed(self, error: str) -> Order:
        """Return the order as failed for good; only a pending order can fail."""
        if self.status is not OrderStatus.PENDING:
            return self
        return replace(self, status=OrderStatus.FAILED, claimed_until=None, last_error=error)
