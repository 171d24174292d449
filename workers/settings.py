"""Worker settings from the environment, on top of the settings shared with the API."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from orders_api.config import Settings


@dataclass(frozen=True)
class WorkerSettings:
    """How hard and how long the workers try to place an order.

    The defaults retry an unavailable exchange for about an hour and a half: backoff doubles
    from 1 s up to 5 min (with jitter), 30 retries in all, after which the order is failed and
    its message dead-lettered for an operator. Every delay stays well under RabbitMQ's 30 min
    consumer timeout, which would otherwise close the channel holding a delayed message.
    """

    shared: Settings = field(default_factory=Settings)
    #: Worker greenlets per process (``dramatiq-gevent``; threads under plain ``dramatiq``): the
    #: placements one process runs at once. Each waits 0.5 s on the exchange, so a process
    #: places up to ``threads / 0.5 s`` orders a second.
    threads: int = 128
    #: Database connections per worker process. A greenlet holds one only for one statement at
    #: a time (read, claim, record), not while the exchange answers, so far fewer than
    #: ``threads`` suffice (docs/benchmarks.md); one that finds none free waits up to
    #: ``DB_POOL_TIMEOUT_S``, and then its message is retried.
    db_pool_size: int = 8
    #: Retries of a failed placement before the order is failed and dead-lettered.
    max_retries: int = 30
    #: Milliseconds before the first retry; doubled for each retry after it.
    min_backoff_ms: int = 1000
    #: Longest pause between two retries, in milliseconds.
    max_backoff_ms: int = 300_000
    #: Milliseconds one message may run before it is interrupted and retried, unless the
    #: exchange has answered: then its answer is recorded however long that takes.
    time_limit_ms: int = 30_000
    #: Milliseconds a claim on an order lasts unless its holder renews it (every fifth of it,
    #: for as long as the holder lives): how long an order whose worker died waits before
    #: another delivery takes it over, and how long a worker must have reached the database
    #: before it takes over any claim (:mod:`orders_api.service_layer.claims`).
    claim_lease_ms: int = 15_000
    #: Refusals since the exchange last answered, and seconds since that answer, after which the
    #: circuit breaker holds placements back (:class:`workers.circuit_breaker.CircuitBreaker`);
    #: the quiet time is well above the 0.5 s the exchange takes to answer.
    breaker_failures: int = 20
    breaker_quiet_ms: int = 2000
    #: Longest pause, in milliseconds, between two probes of an exchange that is down: how late,
    #: at worst, the workers notice that it is back.
    breaker_longest_pause_ms: int = 15_000

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim on an order lasts unless renewed."""
        return timedelta(milliseconds=self.claim_lease_ms)

    @property
    def exchange_wait(self) -> timedelta:
        """How long a message waits for the exchange to come back before it is retried later.

        A third of the time limit, so that the placement itself keeps two thirds of it.
        """
        return timedelta(milliseconds=self.time_limit_ms / 3)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build worker settings from environment variables, falling back to the defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            shared=Settings.from_env(env),
            threads=int(env.get("WORKER_THREADS", defaults.threads)),
            db_pool_size=int(env.get("WORKER_DB_POOL_SIZE", defaults.db_pool_size)),
            max_retries=int(env.get("PLACEMENT_MAX_RETRIES", defaults.max_retries)),
            min_backoff_ms=int(env.get("PLACEMENT_MIN_BACKOFF_MS", defaults.min_backoff_ms)),
            max_backoff_ms=int(env.get("PLACEMENT_MAX_BACKOFF_MS", defaults.max_backoff_ms)),
            time_limit_ms=int(env.get("PLACEMENT_TIME_LIMIT_MS", defaults.time_limit_ms)),
            claim_lease_ms=int(env.get("CLAIM_LEASE_MS", defaults.claim_lease_ms)),
            breaker_failures=int(env.get("EXCHANGE_BREAKER_FAILURES", defaults.breaker_failures)),
            breaker_quiet_ms=int(env.get("EXCHANGE_BREAKER_QUIET_MS", defaults.breaker_quiet_ms)),
            breaker_longest_pause_ms=int(
                env.get("EXCHANGE_BREAKER_LONGEST_PAUSE_MS", defaults.breaker_longest_pause_ms)
            ),
        )
