"""Two numbers for whoever is on call: how old the oldest pending order is, and how many dead letters wait.

Each is one bounded question to PostgreSQL or RabbitMQ, asked by
:mod:`orders_api.entrypoints.on_call_gauges` at scrape time, at most once per cache period.
"""

from __future__ import annotations

import pika
import sqlalchemy as sa
from dramatiq.common import xq_name

from orders_api.adapters.rabbitmq_nodes import connection_name, connection_parameters
from orders_api.adapters.tables import orders
from orders_api.domain import OrderStatus

#: Milliseconds PostgreSQL may spend on the query; without an index on ``status`` it scans the table.
QUERY_TIMEOUT_MS = 2000


def oldest_pending_age_s(engine: sa.Engine) -> float:
    """Seconds since the oldest ``pending`` order was created, by the database's clock; 0 when none is.

    The database's clock, not this host's: ``created_at`` was written by the API's clock, but the
    age is taken where the rows are, so two API hosts with skewed clocks report the same age.
    """
    query = sa.select(sa.func.extract("epoch", sa.func.now() - sa.func.min(orders.c.created_at))).where(
        orders.c.status == OrderStatus.PENDING.value
    )
    with engine.connect() as connection:
        connection.execute(sa.text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}"))
        age = connection.execute(query).scalar_one()
        connection.rollback()
    return max(0.0, float(age)) if age is not None else 0.0


def dead_letter_count(rabbitmq_url: str, placement_queue: str, *, timeout_s: float) -> int:
    """Messages in the placement queue's dead-letter queue (``.XQ``), by a passive declare.

    A connection of its own, opened and closed per question (a few milliseconds, once per cache
    period): the publisher's connection is asynchronous and serves requests, and a question that
    hangs must not hold it.
    """
    parameters = connection_parameters(
        rabbitmq_url,
        connect_timeout_s=timeout_s,
        blocked_connection_timeout_s=timeout_s,
        connection_name=connection_name("orders-api-gauges"),
    )
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        declared = channel.queue_declare(queue=xq_name(placement_queue), passive=True)
        count: int = declared.method.message_count
        return count
    finally:
        if connection.is_open:
            connection.close()
