"""PostgreSQL plumbing: bounded engine options, creating the database and migrating it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from psycopg2 import errors, sql

from orders_api.config import Settings

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(database_url: str) -> sa.URL:
    """Parse ``database_url`` and pin the psycopg2 driver, which SQLAlchemy 2.1 no longer picks by default."""
    url = sa.make_url(database_url)
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def engine_options(settings: Settings, *, pool_size: int | None = None) -> dict[str, Any]:
    """Engine options under which no database wait is unbounded.

    ``statement_timeout`` also bounds lock waits, including a worker waiting on the advisory
    lock of an order whose creating transaction is still open.
    """
    server_options = (
        f"-c statement_timeout={settings.statement_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout_ms}"
    )
    return {
        "pool_size": pool_size or settings.db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.pool_timeout_s,
        "pool_pre_ping": True,
        "connect_args": {
            "connect_timeout": max(1, round(settings.connect_timeout_s)),
            "options": server_options,
        },
    }


def create_engine(settings: Settings, *, pool_size: int | None = None) -> sa.Engine:
    """Create an engine for ``settings.database_url`` with :func:`engine_options`."""
    return sa.create_engine(
        sqlalchemy_url(settings.database_url), **engine_options(settings, pool_size=pool_size)
    )


def ensure_database(database_url: str, *, connect_timeout_s: int = 5) -> bool:
    """Create the database named in ``database_url`` if it is missing; return whether it was created."""
    url = sa.make_url(database_url)
    name = url.database
    if not name:
        raise ValueError(f"no database name in {url.render_as_string(hide_password=True)}")
    maintenance = url.set(drivername="postgresql", database="postgres")
    dsn = maintenance.render_as_string(hide_password=False)
    connection = psycopg2.connect(dsn, connect_timeout=connect_timeout_s)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except errors.DuplicateDatabase:
                return False
    finally:
        connection.close()
    logger.info("created database %s", name)
    return True


def upgrade(database_url: str) -> None:
    """Create the database if needed and bring its schema to the newest migration."""
    ensure_database(database_url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["database_url"] = sqlalchemy_url(database_url)
    command.upgrade(config, "head")


def upgrade_from_environment() -> None:
    """Console entry point ``orders-db-upgrade``: migrate the database named by ``DATABASE_URL``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    upgrade(settings.database_url)
    logger.info("database schema is up to date")
