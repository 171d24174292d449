"""Settings shared by the API and the workers, read from the environment.

Every setting has a default that works on a developer machine with PostgreSQL and RabbitMQ on
127.0.0.1, so ``make run`` needs nothing else; Kubernetes overrides them with plain variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Where orders are stored. The database is created if it does not exist.
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/orders"
#: The broker; ``%2F`` is the default vhost. A cluster is several nodes' URLs separated by ``;``
#: (Dramatiq's notation, read by :mod:`orders_api.adapters.rabbitmq_nodes`): every client
#: connects to the first node that answers and moves to another when its node goes away.
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The queue holding one message per order still to be placed on the exchange.
DEFAULT_PLACEMENT_QUEUE = "order-placement"
#: Deliveries after which RabbitMQ dead-letters a placement message: the backstop for a message
#: that kills its worker before the order's own poison check can see it. High enough that
#: innocent messages, returned to the queue each time a worker holding them dies, never reach it.
DEFAULT_DELIVERY_LIMIT = 20
#: Milliseconds a dead letter stays in the dead-letter queue: a week, as Dramatiq keeps them.
DEFAULT_DEAD_LETTER_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Settings:
    """Connection targets and the bounds on every wait the service makes."""

    database_url: str = DEFAULT_DATABASE_URL
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    placement_queue: str = DEFAULT_PLACEMENT_QUEUE
    #: Seconds to open a TCP connection to PostgreSQL or RabbitMQ.
    connect_timeout_s: float = 2.0
    #: Seconds a request waits for the broker's confirm before it gives up and rolls back.
    confirm_timeout_s: float = 2.0
    #: Milliseconds any SQL statement (or lock wait) may take.
    statement_timeout_ms: int = 3000
    #: Milliseconds a transaction may sit idle; a backstop against a stuck holder of locks.
    idle_in_transaction_timeout_ms: int = 10000
    #: Seconds any wait on PostgreSQL may take on the client's side (a reply, a COMMIT, a
    #: connection): above ``statement_timeout``, so it only fires when the server cannot enforce
    #: that itself (frozen or cut off); see :mod:`orders_api.adapters.database`.
    db_reply_timeout_s: float = 5.0
    #: Seconds a request without an ``Idempotency-Key`` waits for a group commit to take its
    #: order; past it the order is withdrawn, never to be committed, and the answer is ``500``.
    #: Below clients' usual timeouts, so that a stuck database still gets them an answer: only
    #: the orders of a batch already running wait longer, for its outcome.
    group_commit_wait_s: float = 5.0
    #: Seconds to wait for a free connection from the pool.
    pool_timeout_s: float = 2.0
    #: Connections each API process may open to PostgreSQL: one per request thread
    #: (``WEB_THREADS``), since a request with an ``Idempotency-Key`` holds its connection while
    #: it waits for the confirm (the others share their group commit's one connection).
    db_pool_size: int = 32
    #: Whether each connection taken from the pool is first tested with a round trip. Off: the
    #: test cost a quarter of an order's CPU (docs/benchmarks.md), and without it a connection
    #: that died with the server fails the first statement of its transaction, before anything
    #: is written or published; SQLAlchemy then discards the whole pool and reconnects.
    db_pool_pre_ping: bool = False
    #: Seconds a pending order may go untouched before the reconciliation sweep republishes its
    #: placement request. It must exceed the longest quiet period of a healthy order: the longest
    #: retry backoff (``PLACEMENT_MAX_BACKOFF_MS``, 5 min) plus a claim's lease (``CLAIM_LEASE_MS``,
    #: 15 s), plus a margin.
    reconcile_stale_after_s: float = 900.0
    #: RabbitMQ's management HTTP API, through which the placement queues' policies are set
    #: (:mod:`orders_api.adapters.queue_policies`); several nodes' URLs are separated by ``;``.
    #: ``None``: derived from ``rabbitmq_url`` (same hosts and credentials, port 15672, http).
    rabbitmq_management_url: str | None = None
    #: Deliveries of a placement message before RabbitMQ dead-letters it; a policy, so it can be
    #: changed on existing queues (``orders-broker-setup``).
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    #: Milliseconds a dead letter is kept; a policy too.
    dead_letter_ttl_ms: int = DEFAULT_DEAD_LETTER_TTL_MS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, falling back to the defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("DATABASE_URL", defaults.database_url),
            rabbitmq_url=env.get("RABBITMQ_URL", defaults.rabbitmq_url),
            placement_queue=env.get("PLACEMENT_QUEUE", defaults.placement_queue),
            connect_timeout_s=float(env.get("CONNECT_TIMEOUT_S", defaults.connect_timeout_s)),
            confirm_timeout_s=float(env.get("CONFIRM_TIMEOUT_S", defaults.confirm_timeout_s)),
            statement_timeout_ms=int(env.get("STATEMENT_TIMEOUT_MS", defaults.statement_timeout_ms)),
            idle_in_transaction_timeout_ms=int(
                env.get("IDLE_IN_TRANSACTION_TIMEOUT_MS", defaults.idle_in_transaction_timeout_ms)
            ),
            db_reply_timeout_s=float(env.get("DB_REPLY_TIMEOUT_S", defaults.db_reply_timeout_s)),
            group_commit_wait_s=float(env.get("GROUP_COMMIT_WAIT_S", defaults.group_commit_wait_s)),
            pool_timeout_s=float(env.get("DB_POOL_TIMEOUT_S", defaults.pool_timeout_s)),
            db_pool_size=int(env.get("DB_POOL_SIZE", defaults.db_pool_size)),
            db_pool_pre_ping=env.get("DB_POOL_PRE_PING", "1" if defaults.db_pool_pre_ping else "0") == "1",
            reconcile_stale_after_s=float(
                env.get("RECONCILE_STALE_AFTER_S", defaults.reconcile_stale_after_s)
            ),
            rabbitmq_management_url=env.get("RABBITMQ_MANAGEMENT_URL") or None,
            delivery_limit=int(env.get("PLACEMENT_DELIVERY_LIMIT", defaults.delivery_limit)),
            dead_letter_ttl_ms=int(env.get("DEAD_LETTER_TTL_MS", defaults.dead_letter_ttl_ms)),
        )
