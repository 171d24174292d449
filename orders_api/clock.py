"""The service's one clock for timestamps: timezone-aware UTC.

Claims are judged on the database's clock and waits on the monotonic clock; this one dates what
is stored and shown (orders, placements, metrics' ages).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC, as every timestamp of the service is."""
    return datetime.now(UTC)
