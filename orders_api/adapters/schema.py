"""Creating the database if it is missing and migrating it with Alembic.

Kept apart from :mod:`orders_api.adapters.database` so that the API and the workers, which only
connect, never import Alembic.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from psycopg2 import errors, sql

from orders_api.adapters.database import silent_peer_options, sqlalchemy_url
from orders_api.config import Settings
from orders_api.logging_setup import configure_logging

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def ensure_database(database_url: str, *, connect_timeout_s: int = 5) -> bool:
    """Create the database named in ``database_url`` if it is missing; return whether it was created."""
    url = sa.make_url(database_url)
    name = url.database
    if not name:
        raise ValueError(f"no database name in {url.render_as_string(hide_password=True)}")
    maintenance = url.set(drivername="postgresql", database="postgres")
    dsn = maintenance.render_as_string(hide_password=False)
    connection = psycopg2.connect(
        psycopg2.extensions.make_dsn(dsn, **silent_peer_options()), connect_timeout=connect_timeout_s
    )
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
    configure_logging()
    settings = Settings.from_env()
    upgrade(settings.database_url)
    logger.info("database schema is up to date")
