"""Create the orders and idempotency_keys tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``orders`` (and the keys of idempotent requests) with constraints that mirror the API's validation, as a last line of defence."""
    op.create_table(
        "orders",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("instrument", sa.Text, nullable=False),
        sa.Column("limit_price", sa.Numeric(12, 2), nullable=True),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("abandoned_claims", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("type IN ('market', 'limit')", name="orders_type_known"),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="orders_side_known"),
        sa.CheckConstraint("status IN ('pending', 'placed', 'failed')", name="orders_status_known"),
        sa.CheckConstraint("instrument ~ '^[A-Z0-9]{12}$'", name="orders_instrument_isin_shaped"),
        sa.CheckConstraint("quantity > 0", name="orders_quantity_positive"),
        sa.CheckConstraint(
            "(type = 'limit' AND limit_price > 0) OR (type = 'market' AND limit_price IS NULL)",
            name="orders_limit_price_matches_type",
        ),
        sa.CheckConstraint("(status = 'placed') = (placed_at IS NOT NULL)", name="orders_placed_at_iff_placed"),
    )
    # The reconciliation sweep looks for pending orders nobody has touched for a while.
    op.create_index(
        "orders_pending_updated_at", "orders", ["updated_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_fingerprint", sa.Text, nullable=False),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(key) BETWEEN 1 AND 255", name="idempotency_keys_key_length"),
    )
    op.create_index("idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    """Drop ``idempotency_keys`` and ``orders``."""
    op.drop_table("idempotency_keys")
    op.drop_table("orders")
