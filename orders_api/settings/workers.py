"""The workers' settings (``orders-workers``): the pool, and how hard and how long an order is placed.

The defaults retry an unavailable exchange for about an hour and a half: backoff doubles from
1 s up to 5 min (with jitter), 30 retries in all, after which the order is failed and its message
dead-lettered for an operator. Every delay stays well under RabbitMQ's 30 min consumer timeout,
which would otherwise close the channel holding a delayed message (:mod:`orders_api.timeout_rules`).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from orders_api.settings.liveness import WorkerLivenessSettings
from orders_api.settings.shared import Settings
from orders_api.timeout_rules import Timing, milliseconds

#: Milliseconds, from and to, before a message that could not reach the database is tried again:
#: short, so that orders move within seconds of the database's return, and spread, so that a
#: backlog does not come back all at once. Fixed, but a time bound the rules check all the same.
DATABASE_RETRY_DELAY_MS = (1000, 5000)


class WorkerSettings(Settings, WorkerLivenessSettings):
    """``orders-workers`` and each Dramatiq worker process it starts (:mod:`workers.main`)."""

    worker_processes: int = Field(2, ge=1, description="Dramatiq worker processes.")
    #: Each placement waits 0.5 s on the exchange, so a process places up to ``threads / 0.5 s``
    #: orders a second.
    worker_threads: int = Field(
        128, ge=1, description="Greenlets per worker process: placements it runs at once."
    )
    #: A placement takes 0.5 s, and an exchange's answer is recorded within a few database
    #: timeouts; Kubernetes' grace period must exceed it.
    worker_shutdown_timeout_ms: int = Field(
        30_000, gt=0, description="Time Dramatiq waits, after SIGTERM, for the messages in flight."
    )
    #: A greenlet holds one only for one statement at a time (read, claim, record), not while the
    #: exchange answers, so far fewer than ``WORKER_THREADS`` suffice (docs/benchmarks.md); one
    #: that finds none free waits up to ``DB_POOL_TIMEOUT_S``, and then its message is retried.
    worker_db_pool_size: int = Field(
        8, ge=1, description="Connections per worker process (plus one for claim renewals)."
    )
    #: Waiting for the database, the broker, an open breaker or another delivery's claim spends
    #: none of them (:class:`workers.retries.WaitingRetry`).
    placement_max_retries: int = Field(
        30, ge=0, description="Refusals by the exchange before the order is failed and dead-lettered."
    )
    placement_min_backoff_ms: int = Field(
        1000, gt=0, description="Pause before the first retry; doubled each retry."
    )
    placement_max_backoff_ms: int = Field(300_000, gt=0, description="Longest pause between two retries.")
    #: Unless the exchange has answered: then its answer is recorded however long that takes.
    placement_time_limit_ms: int = Field(
        30_000, gt=0, description="Time one message may run before it is interrupted and retried."
    )
    #: Renewed every fifth of it for as long as the holder lives: how long an order whose worker
    #: died waits before another delivery takes it over, and how long a worker must have reached
    #: the database before it takes over any claim (:mod:`orders_api.service_layer.claims`). Long
    #: enough that a claim is renewed in time even when each renewal takes a whole
    #: ``DB_REPLY_TIMEOUT_S`` (:mod:`orders_api.timeout_rules`): 15 s was not.
    claim_lease_ms: int = Field(
        40_000, gt=0, description="How long a claim on an order lasts unless renewed."
    )
    #: See :class:`workers.circuit_breaker.CircuitBreaker`.
    exchange_breaker_failures: int = Field(
        20, ge=1, description="Refusals since the exchange last answered that open the circuit breaker."
    )
    #: Well above the 0.5 s the exchange takes to answer.
    exchange_breaker_quiet_ms: int = Field(
        2000, gt=0, description="Time since the exchange last answered that opens the breaker too."
    )
    exchange_breaker_longest_pause_ms: int = Field(
        15_000, gt=0, description="Longest pause between two probes of an exchange that is down."
    )

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim on an order lasts unless renewed."""
        return timedelta(milliseconds=self.claim_lease_ms)

    @property
    def exchange_wait(self) -> timedelta:
        """How long a message waits for the exchange to come back before it is retried later.

        A third of the time limit, so that the placement itself keeps two thirds of it.
        """
        return timedelta(milliseconds=self.placement_time_limit_ms / 3)

    def timings(self) -> dict[str, Timing]:
        """The shared settings' durations and the workers' own, with their longest database retry delay."""
        longest_retry_ms = max(DATABASE_RETRY_DELAY_MS)
        return {
            **super().timings(),
            "DATABASE_RETRY_DELAY_MS": milliseconds("DATABASE_RETRY_DELAY_MS", longest_retry_ms),
        }
