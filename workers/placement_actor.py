"""The ``place_order`` actor: the queue consumer's side of an order's placement."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Protocol

import dramatiq
import sqlalchemy as sa

from exchange_simulator.stock_exchange import OrderPlacementError
from orders_api.adapters.rabbitmq.placement_queue import PLACE_ORDER_ACTOR
from orders_api.domain import ClaimHeldError, Order, PoisonOrderError
from orders_api.service_layer.claims import ClaimKeeper
from orders_api.service_layer.placement import (
    AnswerCourier,
    Exchange,
    OrderAlreadyFailedError,
    PlacementOutcome,
    UnloadableOrderError,
    note_still_waiting,
    parse_order_id,
    place_on_exchange,
)
from orders_api.service_layer.unit_of_work import DatabaseInRecoveryError, UnitOfWork
from orders_api.settings.workers import DATABASE_RETRY_DELAY_MS, WorkerSettings
from workers.circuit_breaker import AdmittedCall, CircuitBreaker, DependencyUnavailableError
from workers.retries import WaitingRetry
from workers.time_limit import LiftableTimeLimit

logger = logging.getLogger(__name__)

#: Errors that no retry can fix: the message goes straight to the dead-letter queue.
NOT_RETRYABLE = (ValueError, UnloadableOrderError, PoisonOrderError, OrderAlreadyFailedError)
#: Errors by which the exchange says it cannot take orders right now. They are expected: the
#: circuit breaker counts them, and the message is retried with one warning line, not a traceback.
EXCHANGE_UNAVAILABLE = (OrderPlacementError, ConnectionError, TimeoutError)
#: Errors by which the database says it cannot be reached right now (refused, frozen, pool
#: exhausted). Retrying fixes them, so they never use up a message's retries (:class:`WaitingRetry`).
DATABASE_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
#: SQLSTATE of a write refused by a server that takes none right now: a standby still in
#: recovery, as a failover's new primary is until its promotion ends.
READ_ONLY_SQL_TRANSACTION = "25006"
#: Seconds from the breaker opening to its first probe of the exchange (unless the longest pause is shorter).
FIRST_PROBE_PAUSE_S = 1.0


class WaitingForDatabaseError(WaitingRetry):
    """The message could not reach the database; retry it soon, without counting it as a retry."""


class PlacementObserver(Protocol):
    """Told what each placement message came to, for metrics (:class:`workers.metrics.WorkerMetrics`)."""

    def handled(self, outcome: PlacementOutcome, created_at: datetime | None) -> None:
        """A message was handled; an order ``PLACED`` now was created at ``created_at``."""

    def retried(self, reason: str) -> None:
        """A message is to be retried, for ``reason``."""

    def took_over(self) -> None:
        """A claim abandoned mid-placement was taken over: the order may be placed twice."""


class _Unobserved:
    def handled(self, outcome: PlacementOutcome, created_at: datetime | None) -> None:
        pass

    def retried(self, reason: str) -> None:
        pass

    def took_over(self) -> None:
        pass


def exchange_breaker(
    settings: WorkerSettings, on_change: Callable[[bool], None] | None = None
) -> CircuitBreaker:
    """The circuit breaker in front of the exchange, one per process; ``on_change`` sees it open, close."""
    longest_pause_s = settings.exchange_breaker_longest_pause_ms / 1000
    return CircuitBreaker(
        "the exchange",
        failures_to_open=settings.exchange_breaker_failures,
        quiet_s=settings.exchange_breaker_quiet_ms / 1000,
        first_pause_s=min(FIRST_PROBE_PAUSE_S, longest_pause_s),
        longest_pause_s=longest_pause_s,
        on_change=on_change,
    )


def declare_place_order_actor(
    broker: dramatiq.Broker,
    settings: WorkerSettings,
    unit_of_work: Callable[[], UnitOfWork],
    exchange: Exchange,
    *,
    breaker: CircuitBreaker,
    claims: ClaimKeeper,
    time_limit: LiftableTimeLimit,
    courier: AnswerCourier | None = None,
    observer: PlacementObserver | None = None,
) -> dramatiq.Actor[[str], None]:
    """Declare the actor on ``broker`` with its retry policy and its dependencies bound.

    ``courier`` takes the exchange's answers the database cannot take at once
    (:mod:`workers.answer_courier`); ``observer`` is told each message's outcome and each
    retry's reason (for metrics).
    """
    observed: PlacementObserver = observer or _Unobserved()

    def place_order(order_id: str) -> None:
        """Place the order named by the message; it carries an id, never the order itself."""
        parsed_id = parse_order_id(order_id)
        called: list[Order] = []
        try:
            with breaker.admitted(settings.exchange_wait.total_seconds()) as call:
                outcome = place_on_exchange(
                    parsed_id,
                    unit_of_work(),
                    _watched(exchange, call, time_limit, called),
                    claims=claims,
                    courier=courier,
                    on_takeover=lambda _order_id: observed.took_over(),
                )
        except ClaimHeldError as held:
            observed.retried("claim_held")
            raise WaitingRetry(str(held), delay=after_claim_ms(held)) from held
        except DependencyUnavailableError as down:
            observed.retried("breaker_open")
            with suppress(*DATABASE_UNAVAILABLE):
                note_still_waiting(parsed_id, unit_of_work())
            raise WaitingRetry(str(down), delay=after_breaker_ms(settings)) from down
        except EXCHANGE_UNAVAILABLE as refused:
            observed.retried("exchange_unavailable")
            logger.warning("order %s not placed, to be retried: %s", order_id, _describe(refused))
            raise dramatiq.Retry(str(refused)) from refused
        except Exception as away:
            if not waits_for_database(away):
                raise
            observed.retried("database_unavailable")
            logger.warning("order %s waits for the database: %s", order_id, _describe(away))
            raise WaitingForDatabaseError(str(away), delay=random.randint(*DATABASE_RETRY_DELAY_MS)) from away
        observed.handled(outcome, called[0].created_at if called else None)

    declare = dramatiq.actor(
        actor_name=PLACE_ORDER_ACTOR,
        queue_name=settings.placement_queue,
        broker=broker,
        max_retries=settings.placement_max_retries,
        min_backoff=settings.placement_min_backoff_ms,
        max_backoff=settings.placement_max_backoff_ms,
        time_limit=settings.placement_time_limit_ms,
        throws=NOT_RETRYABLE,
    )
    actor: dramatiq.Actor[[str], None] = declare(place_order)
    return actor


def waits_for_database(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached, or cannot take writes, right now.

    Waiting fixes each of them, and none may spend a message's retries: during a failover the
    new primary refuses writes until its promotion ends, and a message that counted each refusal
    would back off for minutes afterwards.
    """
    if isinstance(error, (*DATABASE_UNAVAILABLE, DatabaseInRecoveryError)):
        return True
    return (
        isinstance(error, sa.exc.DBAPIError)
        and getattr(error.orig, "pgcode", None) == READ_ONLY_SQL_TRANSACTION
    )


def after_claim_ms(held: ClaimHeldError) -> int:
    """Milliseconds until a message that met another delivery's claim is tried again.

    The rest of the claim, when it may have ended, plus 0.1 to 1 s of jitter, so that the
    deliveries waiting on one order do not all come back at the same instant.
    """
    return int(held.retry_after.total_seconds() * 1000) + random.randint(100, 1000)


def after_breaker_ms(settings: WorkerSettings) -> int:
    """Milliseconds until a message that waited in vain for the breaker to close is tried again.

    Spread between the first backoff and the breaker's longest pause between probes: by then a
    probe has found out whether the exchange is back, and the waiting messages return spread out.
    """
    return random.randint(
        settings.placement_min_backoff_ms,
        max(settings.placement_min_backoff_ms, settings.exchange_breaker_longest_pause_ms),
    )


def _watched(
    exchange: Exchange, call: AdmittedCall, time_limit: LiftableTimeLimit, called: list[Order]
) -> Exchange:
    """``exchange``, telling the breaker whether each call found it available.

    The message's time limit is lifted as soon as the call ends: from then on the answer has
    to be recorded, and nothing may interrupt that. The order called with is appended to
    ``called``, for the time from its creation to its placement.
    """

    def place(order: Order) -> None:
        called.append(order)
        try:
            exchange(order)
        except EXCHANGE_UNAVAILABLE:
            call.failed()
            raise
        finally:
            time_limit.lift()
        call.succeeded()

    return place


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
