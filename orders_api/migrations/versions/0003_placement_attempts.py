"""Which claim placed each order, and which other claims placed it again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``placed_attempt`` and ``duplicate_attempts``, with defaults the previous release never reads.

    A worker paused *inside* the exchange call can have its claim taken over, and then both
    attempts place the order: the second one to record its outcome finds the order placed by
    another attempt and adds its own number to ``duplicate_attempts``. An array rather than a
    count, so that recording the same attempt twice (a retry after a lost reply) counts it once.
    Orders placed before this migration have no ``placed_attempt``; none of them is counted.
    """
    op.add_column("orders", sa.Column("placed_attempt", sa.Integer, nullable=True))
    op.add_column(
        "orders",
        sa.Column(
            "duplicate_attempts", postgresql.ARRAY(sa.Integer), nullable=False, server_default=sa.text("'{}'")
        ),
    )


def downgrade() -> None:
    """Drop the two columns."""
    op.drop_column("orders", "duplicate_attempts")
    op.drop_column("orders", "placed_attempt")
