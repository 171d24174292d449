"""How old the oldest pending order is: one bounded question to PostgreSQL for whoever is on call.

Asked by :mod:`orders_api.api.on_call_gauges` at scrape time, at most once per cache period,
beside the count of dead letters (:func:`orders_api.adapters.rabbitmq.dead_letters.dead_letter_count`).
"""

from __future__ import annotations

import sqlalchemy as sa

from orders_api.adapters.postgres.tables import orders
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
