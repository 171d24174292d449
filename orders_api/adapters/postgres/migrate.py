"""Creating the database if it is missing and migrating it with Alembic.

Kept apart from :mod:`orders_api.adapters.postgres.database` so that the API and the workers, which only
connect, never import Alembic.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from psycopg2 import errors

from orders_api.adapters.postgres.database import sqlalchemy_url, unpooled_engine
from orders_api.logging_setup import configure_logging
from orders_api.settings.base import load
from orders_api.settings.shared import Settings

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
_DATABASE_EXISTS = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")


def ensure_database(database_url: str, *, connect_timeout_s: int = 5) -> bool:
    """Create the database named in ``database_url`` if it is missing; return whether it was created."""
    url = sqlalchemy_url(database_url)
    name = url.database
    if not name:
        raise ValueError(f"no database name in {url.render_as_string(hide_password=True)}")
    engine = unpooled_engine(
        url.set(database="postgres"), connect_timeout_s=connect_timeout_s, autocommit=True
    )
    try:
        with engine.connect() as connection:
            exists = connection.execute(_DATABASE_EXISTS, {"name": name}).first()
            if exists:
                return False
            try:
                connection.execute(
                    sa.text(f"CREATE DATABASE {connection.dialect.identifier_preparer.quote(name)}")
                )
            except sa.exc.ProgrammingError as error:
                if isinstance(error.orig, errors.DuplicateDatabase):
                    return False  # created by a concurrent start meanwhile
                raise
    finally:
        engine.dispose()
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
    settings = load(Settings)
    configure_logging(settings)
    upgrade(settings.database_url)
    logger.info("database schema is up to date")
