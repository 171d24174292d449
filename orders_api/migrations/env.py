"""Alembic environment: runs migrations on the URL handed over by ``orders_api.adapters.postgres.migrate``.

Migrations run under a PostgreSQL advisory lock so that several pods or processes starting at
once migrate one after another instead of racing on the same DDL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from orders_api.adapters.postgres.database import unpooled_engine

#: Advisory lock key reserved for schema migrations ("orders" in ASCII).
MIGRATION_LOCK_KEY = 0x6F7264657273

database_url: sa.URL = context.config.attributes["database_url"]
engine = unpooled_engine(database_url)
with engine.connect() as connection:
    connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
