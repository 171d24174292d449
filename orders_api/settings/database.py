"""PostgreSQL: where it is, the pool each process keeps, and the bound on every wait for it.

How the bounds depend on each other is in docs/timeouts.md; :mod:`orders_api.timeout_rules`
checks their order at every start.
"""

from __future__ import annotations

from pydantic import Field

from orders_api.settings.base import SettingsBase


class DatabaseUrlSettings(SettingsBase):
    """The database alone: all the feed simulator reads of it."""

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/orders",
        description="PostgreSQL's URL; `orders-db-upgrade` creates the database if it is missing.",
    )


class DatabaseSettings(DatabaseUrlSettings):
    """The service's connections to PostgreSQL."""

    statement_timeout_ms: int = Field(3000, gt=0, description="Longest SQL statement, or lock wait.")
    #: A backstop against a stuck holder of locks.
    idle_in_transaction_timeout_ms: int = Field(
        10_000, gt=0, description="Longest a transaction may sit idle before PostgreSQL ends it."
    )
    #: Above ``statement_timeout``, so it only fires when the server cannot enforce that itself
    #: (frozen or cut off); see :mod:`orders_api.adapters.postgres.database`.
    db_reply_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait, client side, for any reply of PostgreSQL (COMMIT included)."
    )
    db_pool_timeout_s: float = Field(2.0, gt=0, description="Longest wait for a free pooled connection.")
    #: One per request thread (``WEB_THREADS``), since a request with an ``Idempotency-Key`` holds
    #: its connection while it waits for the confirm (the others share their group commit's one).
    #: The workers, the ingestor and the applier size their pools themselves.
    db_pool_size: int = Field(32, ge=1, description="Connections each API (or sweep) process may open.")
    #: Off: the test cost a quarter of an order's CPU (docs/benchmarks.md), and without it a
    #: connection that died with the server fails the first statement of its transaction, before
    #: anything is written or published; SQLAlchemy then discards the whole pool and reconnects.
    db_pool_pre_ping: bool = Field(
        False, description="Test each pooled connection with a round trip before use."
    )
