"""Execution reports from the exchange, each order's execution state, and the feed's resume point.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: The kinds of report the exchange sends, and the execution states they lead to.
REPORT_KINDS = "('accepted', 'partial_fill', 'fill', 'cancelled', 'rejected')"
EXECUTION_STATUSES = "('accepted', 'partially_filled', 'filled', 'cancelled', 'rejected')"


def upgrade() -> None:
    """Add the execution columns (with defaults, so that code of the previous release keeps working) and two tables.

    ``filled_notional`` (the sum of quantity × price over the fills) is kept rather than an
    average, so that every fill adds exactly and in any order; the average is derived from it.
    ``execution_seq`` is the highest report sequence applied to ``execution_status``: a report
    with a lower one changes the fills but never the status.
    """
    op.add_column("orders", sa.Column("filled_quantity", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column(
        "orders", sa.Column("filled_notional", sa.Numeric(30, 6), nullable=False, server_default="0")
    )
    op.add_column("orders", sa.Column("execution_status", sa.Text, nullable=True))
    op.add_column("orders", sa.Column("execution_seq", sa.Integer, nullable=False, server_default="0"))
    op.create_check_constraint(
        "orders_filled_within_quantity", "orders", "filled_quantity BETWEEN 0 AND quantity"
    )
    op.create_check_constraint(
        "orders_execution_status_known",
        "orders",
        f"execution_status IS NULL OR execution_status IN {EXECUTION_STATUSES}",
    )
    # GET /orders pages through orders newest first, by (created_at, id).
    op.create_index("orders_created_at_id", "orders", ["created_at", "id"])
    op.create_table(
        "executions",
        sa.Column("exec_id", sa.Text, primary_key=True),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("price", sa.Numeric(18, 6), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(f"kind IN {REPORT_KINDS}", name="executions_kind_known"),
        sa.CheckConstraint("seq > 0", name="executions_seq_positive"),
        sa.CheckConstraint("quantity >= 0", name="executions_quantity_not_negative"),
        sa.CheckConstraint(
            "(kind IN ('partial_fill', 'fill')) = (price IS NOT NULL AND quantity > 0)",
            name="executions_fills_have_price_and_quantity",
        ),
    )
    op.create_index("executions_order_seq", "executions", ["order_id", "seq"])
    op.create_table(
        "feed_cursors",
        sa.Column("feed", sa.Text, primary_key=True),
        sa.Column("last_feed_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_table("feed_cursors")
    op.drop_index("executions_order_seq", table_name="executions")
    op.drop_table("executions")
    op.drop_index("orders_created_at_id", table_name="orders")
    op.drop_constraint("orders_execution_status_known", "orders")
    op.drop_constraint("orders_filled_within_quantity", "orders")
    for column in ("execution_seq", "execution_status", "filled_notional", "filled_quantity"):
        op.drop_column("orders", column)
