"""The ingestor's resume point in PostgreSQL: ``feed_cursors.last_feed_seq`` for one feed.

Kept in the service's database, beside the executions it leads to, so a backup restores the
two together and an operator reads it with SQL. It only ever moves forward (``GREATEST``), so a
late write from a process being replaced cannot move it back.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from orders_api.adapters.postgres.tables import feed_cursors

#: The exchange's execution feed's name in ``feed_cursors``.
EXCHANGE_FEED = "exchange"


class FeedCursor:
    """Reads and stores the last ``feed_seq`` of ``feed`` whose reports are all in RabbitMQ."""

    def __init__(self, engine: sa.Engine, feed: str = EXCHANGE_FEED) -> None:
        self._engine = engine
        self._feed = feed

    def load(self) -> int:
        """The stored resume point; 0 (from the beginning) if none was ever stored."""
        with self._engine.connect() as connection:
            value = connection.execute(
                sa.select(feed_cursors.c.last_feed_seq).where(feed_cursors.c.feed == self._feed)
            ).scalar_one_or_none()
        return int(value) if value is not None else 0

    def store(self, last_feed_seq: int) -> None:
        """Store ``last_feed_seq`` unless a greater one is stored already."""
        statement = insert(feed_cursors).values(feed=self._feed, last_feed_seq=last_feed_seq)
        statement = statement.on_conflict_do_update(
            index_elements=[feed_cursors.c.feed],
            set_={
                "last_feed_seq": sa.func.greatest(
                    feed_cursors.c.last_feed_seq, statement.excluded.last_feed_seq
                ),
                "updated_at": sa.func.now(),
            },
        )
        with self._engine.begin() as connection:
            connection.execute(statement)
