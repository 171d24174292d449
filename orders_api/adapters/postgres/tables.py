"""The tables as SQLAlchemy sees them; the Alembic migrations own their DDL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("instrument", sa.Text, nullable=False),
    sa.Column("limit_price", sa.Numeric(12, 2), nullable=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("abandoned_claims", sa.Integer, nullable=False),
    sa.Column("placed_attempt", sa.Integer, nullable=True),
    sa.Column("duplicate_attempts", postgresql.ARRAY(sa.Integer), nullable=False, server_default="{}"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("filled_quantity", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("filled_notional", sa.Numeric(30, 6), nullable=False, server_default="0"),
    sa.Column("execution_status", sa.Text, nullable=True),
    sa.Column("execution_seq", sa.Integer, nullable=False, server_default="0"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("request_fingerprint", sa.Text, nullable=False),
    sa.Column("order_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("orders.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("exec_id", sa.Text, primary_key=True),
    sa.Column("order_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("orders.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("price", sa.Numeric(18, 6), nullable=True),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

feed_cursors = sa.Table(
    "feed_cursors",
    metadata,
    sa.Column("feed", sa.Text, primary_key=True),
    sa.Column("last_feed_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
