"""PostgreSQL connections: the URL's driver and engine options under which no wait is unbounded."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orders_api.config import Settings


def sqlalchemy_url(database_url: str) -> sa.URL:
    """Parse ``database_url`` and pin the psycopg2 driver, which SQLAlchemy 2.1 no longer picks by default."""
    url = sa.make_url(database_url)
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def engine_options(
    settings: Settings,
    *,
    pool_size: int | None = None,
    application_name: str = "orders-api",
    autocommit: bool = False,
) -> dict[str, Any]:
    """Engine options under which no database wait is unbounded.

    ``statement_timeout`` also bounds lock waits, including a worker waiting on the advisory
    lock of an order whose creating transaction is still open. ``application_name`` names the
    connections in ``pg_stat_activity``, so an operator (or the benchmark) can tell whose they are.
    ``autocommit`` suits callers whose every statement stands alone: it saves the ``BEGIN`` and
    ``COMMIT`` round trips around each.
    """
    server_options = (
        f"-c statement_timeout={settings.statement_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout_ms}"
    )
    options: dict[str, Any] = {
        "pool_size": pool_size or settings.db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.pool_timeout_s,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "connect_args": {
            "connect_timeout": max(1, round(settings.connect_timeout_s)),
            "options": server_options,
            "application_name": application_name,
        },
    }
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return options


def create_engine(
    settings: Settings,
    *,
    pool_size: int | None = None,
    application_name: str = "orders-api",
    autocommit: bool = False,
) -> sa.Engine:
    """Create an engine for ``settings.database_url`` with :func:`engine_options`."""
    return sa.create_engine(
        sqlalchemy_url(settings.database_url),
        **engine_options(
            settings, pool_size=pool_size, application_name=application_name, autocommit=autocommit
        ),
    )
