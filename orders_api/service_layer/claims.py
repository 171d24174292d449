"""A worker process's claims, kept alive for as long as the process lives.

A claim on an order is a lease, written and judged on the database's clock: a worker's own
clock may run ahead, or step after an outage, and would take a live claim. Were the lease
fixed, a placement whose outcome could not be recorded before the lease ran out (the database
away for longer than the lease) would be taken over by another delivery, which would call the
exchange a second time. So the process that holds a claim
renews it, every fifth of a lease, from the moment it is taken until the call's outcome is
recorded, however long that takes: a claim expires only once its holder has stopped renewing it.

An expired claim then means one of two things: its holder died (take it over), or the database
was away for everyone, the holder included, which will renew it as soon as it is back. A
:class:`ClaimKeeper` tells them apart from its own view of the database: it lets its process
take over an expired claim only once its own renewals have reached the database, without a gap,
for a whole lease, a time in which any living holder renews its claims too. What remains is a
holder that is alive but cut off from the database on its own while others reach it; such a
holder cannot be told from a dead one by anyone, and is written down in solution.md.

The keeper's own view of when each claim runs out is measured on the process's monotonic clock,
from the moment before the statement that took or renewed it was sent: never later than the
database's expiry. A holder paused long enough for its claim to near that point (SIGSTOP, a
stalled VM, a starved event loop) asks the database whether the claim is still its own before
it calls the exchange (:meth:`ClaimKeeper.still_held`), since another delivery may have taken it
over meanwhile and called the exchange itself.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from orders_api.domain import Order
from orders_api.service_layer.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

#: Renewals per lease: a holder has several chances to renew before its claim runs out.
RENEWALS_PER_LEASE = 5
#: The origin of :func:`steady_now`'s readings; any fixed instant would do.
_STEADY_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def steady_now() -> datetime:
    """Now on the process's monotonic clock, which never steps, as a datetime to subtract others from.

    Only differences between its readings mean anything; it is no time of day.
    """
    return _STEADY_ORIGIN + timedelta(seconds=time.monotonic())


class _Claim(NamedTuple):
    """A claim this process holds: the attempt it was taken for, and when its lease ends at the latest.

    ``until`` is on the keeper's clock, never the database's.
    """

    attempt: int
    until: datetime


class ClaimKeeper:
    """Renews the claims its process holds, and says when an expired claim may be taken over.

    Thread-safe (and cooperative under gevent); renewals run on a unit of work of their own,
    so that a pool exhausted by placements cannot starve them.
    """

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        lease: timedelta,
        *,
        now: Callable[[], datetime] = steady_now,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._unit_of_work = unit_of_work
        self.lease = lease
        self._now = now
        self._lock = threading.Lock()
        #: Order id → the claim this process holds on it: its attempt, and its lease's end.
        self._held: dict[uuid.UUID, _Claim] = {}
        #: When the current unbroken run of successful renewals began, and the last of them.
        self._reached_since: datetime | None = None
        self._last_reached: datetime | None = None

    @property
    def renew_every(self) -> timedelta:
        """The pause between two renewals."""
        return self.lease / RENEWALS_PER_LEASE

    @property
    def held(self) -> dict[uuid.UUID, int]:
        """The claims held right now: order id → attempt."""
        with self._lock:
            return {order_id: claim.attempt for order_id, claim in self._held.items()}

    def clock(self) -> datetime:
        """Now on the keeper's clock: read it before taking a claim, and pass it to :meth:`hold`."""
        return self._now()

    def hold(self, claimed: Order, taken_at: datetime) -> None:
        """Keep renewing the claim just taken on ``claimed`` until :meth:`let_go`.

        ``taken_at`` is :meth:`clock` read before the claim was read and taken: the lease runs
        from the database's time of that read, which cannot come before it.
        """
        if claimed.claimed_until is None:
            raise ValueError(f"order {claimed.id} is not claimed")
        with self._lock:
            self._held[claimed.id] = _Claim(claimed.attempts, taken_at + self.lease)

    def still_held(self, order_id: uuid.UUID) -> bool:
        """Whether the claim on ``order_id`` is still this process's, as the exchange is about to be called.

        Free while more than half a lease is surely left, which is always but after a pause;
        otherwise the claim is renewed in the database if it is still this process's (nobody
        took it over with a new attempt), and that tells.
        """
        with self._lock:
            claim = self._held.get(order_id)
        if claim is None:
            return False
        sent_at = self._now()
        if claim.until - sent_at > self.lease / 2:
            return True
        with self._unit_of_work() as uow:
            renewed = uow.orders.renew_claims({order_id: claim.attempt}, self.lease)
            uow.commit()
        if not renewed:
            logger.warning(
                "the claim on order %s (attempt %d) was taken over or settled", order_id, claim.attempt
            )
            return False
        with self._lock:
            if order_id in self._held:
                self._held[order_id] = _Claim(claim.attempt, sent_at + self.lease)
        return True

    def let_go(self, order_id: uuid.UUID) -> None:
        """Stop renewing the claim on ``order_id``: its outcome is recorded."""
        with self._lock:
            self._held.pop(order_id, None)

    def renew(self) -> bool:
        """Extend the held claims past half their lease by a lease; say if the database answered.

        A claim younger than that is left alone: most placements end within a second, and a
        renewal would make their record's compare-and-set miss (one more read and write each).
        Half a lease leaves a renewal that comes late room to come. A renewal also runs with no
        claim to extend: it is how the keeper knows the database is there.
        """
        now = self._now()
        until = now + self.lease
        with self._lock:
            due = {
                order_id: claim.attempt
                for order_id, claim in self._held.items()
                if claim.until - now < self.lease / 2
            }
        try:
            with self._unit_of_work() as uow:
                uow.orders.renew_claims(due, self.lease)
                uow.commit()
        except Exception as error:
            with self._lock:
                was_reached, self._last_reached = self._last_reached, None
            if was_reached is not None:
                logger.warning("cannot renew %d claims: %s: %s", len(due), type(error).__name__, error)
            return False
        reached = self._now()
        with self._lock:
            for order_id, attempt in due.items():
                if order_id in self._held:
                    self._held[order_id] = _Claim(attempt, until)
            if self._last_reached is None or reached - self._last_reached > 2 * self.renew_every:
                if self._last_reached is None and self._reached_since is not None:
                    logger.warning("claims renewed again (%d held)", len(self._held))
                self._reached_since = reached
            self._last_reached = reached
        return True

    def takeover_delay(self) -> timedelta:
        """How long this process must still reach the database before it may take over an expired claim.

        Zero once its renewals have reached the database without a gap for a whole lease; a
        whole lease while they do not (or the last one is overdue).
        """
        now = self._now()
        with self._lock:
            since, last = self._reached_since, self._last_reached
        if since is None or last is None or now - last > 2 * self.renew_every:
            return self.lease
        return max(timedelta(0), self.lease - (now - since))

    def keep_renewing(self, stop: threading.Event) -> None:
        """Renew every :attr:`renew_every` until ``stop`` is set; run it on a thread of its own."""
        while True:
            self.renew()
            if stop.wait(self.renew_every.total_seconds()):
                return
