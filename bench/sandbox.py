"""A database and a RabbitMQ vhost of the benchmark run's own, created at the start and dropped at the end.

The run never touches the ``orders`` database or the ``/`` vhost that ``make run`` uses, and
leaves nothing behind, even when it fails midway.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

from orders_api.adapters.postgres.migrate import upgrade
from orders_testkit.rabbitmq_admin import RabbitAdmin

#: The PostgreSQL server the run creates its database on.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
#: The RabbitMQ server the run creates its vhost on (its management API is RabbitAdmin's).
RABBITMQ_HOST_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


@dataclass(frozen=True)
class Sandbox:
    """Where one benchmark run keeps its orders and its messages."""

    name: str
    database_url: str
    rabbitmq_url: str
    rabbit: RabbitAdmin

    def connect(self) -> psycopg2.extensions.connection:
        """A connection to the run's database, in autocommit, for the benchmark's own queries."""
        connection = psycopg2.connect(self.database_url, connect_timeout=5)
        connection.autocommit = True
        return connection


def scalar(cursor: psycopg2.extensions.cursor) -> Any:  # noqa: ANN401 (whatever the query selects)
    """The one value of the row the cursor's last query returned."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row[0]


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """Create and migrate ``orders_bench_<random>`` and a vhost of the same name; drop both afterwards."""
    name = f"orders_bench_{uuid.uuid4().hex[:10]}"
    rabbit = RabbitAdmin(name)
    database_url = f"{POSTGRES_URL}/{name}"
    try:
        upgrade(database_url)
        rabbit.create_vhost()
        yield Sandbox(name, database_url, f"{RABBITMQ_HOST_URL}/{quote(name, safe='')}", rabbit)
    finally:
        try:
            _drop_database(name)
        finally:
            rabbit.delete_vhost()


def _drop_database(name: str) -> None:
    connection = psycopg2.connect(f"{POSTGRES_URL}/postgres", connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        connection.close()
